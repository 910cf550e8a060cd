//! Backups made by the engine's built-in tool (`fixtures/kyrodb-builtin-backups`):
//! listed beside ours, verified, restored to the states the engine recovered from them; damage
//! and the missing-snapshot case refused with exit 3.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::*;
use predicates::prelude::*;

const FULL: &str = "3e49cddd-41ba-46a7-86c3-b628ba72b85b";
const INC: &str = "4cfaff99-6882-4f7f-ba26-11844beb93b1";

fn backups() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    copy_dir(&fixtures().join("kyrodb-builtin-backups/backups"), &dir);
    (tmp, dir)
}

fn expected(name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(
        &fs::read(fixtures().join("kyrodb-builtin-backups").join(name)).unwrap(),
    )
    .unwrap();
    kyrodb_backup_format::engine::FullState::from_expected_json(&v)
        .unwrap()
        .to_expected_json()
}

/// Writes an archive in the built-in tool's layout and its metadata, with a correct checksum.
fn write_builtin(dir: &Path, id: &str, parent: Option<&str>, ts: u64, members: &[(&str, Vec<u8>)]) {
    let mut tar = (members.len() as u32).to_le_bytes().to_vec();
    let mut sum = 0u32;
    for (name, data) in members {
        tar.extend_from_slice(&(name.len() as u32).to_le_bytes());
        tar.extend_from_slice(name.as_bytes());
        tar.extend_from_slice(&(data.len() as u64).to_le_bytes());
        tar.extend_from_slice(data);
        sum = sum.wrapping_add(crc32fast::hash(data));
    }
    fs::write(dir.join(format!("backup_{id}.tar")), &tar).unwrap();
    let meta = serde_json::json!({
        "id": id, "timestamp": ts,
        "backup_type": if parent.is_some() { "Incremental" } else { "Full" },
        "size_bytes": tar.len(), "vector_count": 0, "checksum": sum,
        "parent_id": parent, "description": "forged",
    });
    fs::write(
        dir.join(format!("backup_{id}.json")),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();
}

#[test]
fn listed_beside_ours_verified_and_restored_to_the_engines_states() {
    let (tmp, dir) = backups();
    let data = tmp.path().join("data");
    copy_fixture_data("v4-wal-only", &data);
    let ours = create(&data, &dir, &[]);
    let out = kb()
        .backup_dir(&dir)
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [ours["id"].as_str().unwrap(), INC, FULL],
        "newest first, both tools"
    );
    assert_eq!(v[1]["format"], "builtin");
    assert_eq!(v[1]["parent_id"], FULL);
    kb().backup_dir(&dir)
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("Incremental (built-in)"));
    kb().backup_dir(&dir)
        .args(["verify", "--all"])
        .assert()
        .success();
    for (id, want) in [
        (FULL, "expected-full.json"),
        (INC, "expected-incremental.json"),
    ] {
        let target = tmp.path().join(format!("r-{id}"));
        kb().backup_dir(&dir)
            .data_dir(&target)
            .args(["restore", "--backup-id", &id[..8]])
            .assert()
            .success();
        assert_eq!(recovered_as_expected_json(&target), expected(want), "{id}");
    }
    kb().backup_dir(&dir)
        .args(["show", INC])
        .assert()
        .success()
        .stdout(predicate::str::contains("built-in backup tool"))
        .stdout(predicate::str::contains(FULL));
}

#[test]
fn a_damaged_archive_is_reported_and_refused() {
    let (tmp, dir) = backups();
    let tar = dir.join(format!("backup_{FULL}.tar"));
    let mut b = fs::read(&tar).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x01;
    fs::write(&tar, b).unwrap();
    kb().backup_dir(&dir)
        .args(["verify", "--all"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains(FULL));
    let target = tmp.path().join("t");
    copy_fixture_data("v4-basic", &target);
    let before = tree(&target);
    kb().backup_dir(&dir)
        .data_dir(&target)
        .args(["restore", "--backup-id", INC])
        .env("BACKUP_ALLOW_CLEAR", "true")
        .assert()
        .code(3);
    assert_eq!(tree(&target), before);
}

#[test]
fn a_missing_parent_is_reported() {
    let (_tmp, dir) = backups();
    fs::remove_file(dir.join(format!("backup_{FULL}.json"))).unwrap();
    kb().backup_dir(&dir)
        .args(["verify", INC])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("parent"));
}

#[test]
fn a_chain_whose_manifest_names_a_snapshot_no_archive_holds_is_refused_not_reproduced() {
    let (tmp, dir) = backups();
    // The engine took a snapshot after the full; the tool's next incremental holds only WAL.
    let manifest = br#"{
  "version": 1,
  "latest_snapshot": "snapshot_1795529960000000.snap",
  "latest_snapshot_wal_seq": 120,
  "wal_segments": [
    "wal_1795529954728786.wal"
  ],
  "last_updated": 1795529961
}"#;
    let wal = fs::read(fixtures().join("kyrodb/v4-basic/data/wal_1795529684597385.wal")).unwrap();
    let id = "7f7f7f7f-0000-4000-8000-000000000001";
    write_builtin(
        &dir,
        id,
        Some(INC),
        1_795_529_970,
        &[
            ("MANIFEST", manifest.to_vec()),
            ("wal_1795529954728786.wal", wal),
        ],
    );
    kb().backup_dir(&dir)
        .args(["verify", id])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("snapshot_1795529960000000.snap"))
        .stdout(predicate::str::contains("lose documents"));
    let target = tmp.path().join("t");
    kb().backup_dir(&dir)
        .data_dir(&target)
        .args(["restore", "--backup-id", id])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("no archive of its chain holds"));
    assert!(!target.exists());
}

/// `list --format json` of `dir` (it must succeed), and what it said on stderr.
fn list_json(dir: &Path) -> (serde_json::Value, String) {
    let out = kb()
        .backup_dir(dir)
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn listed_with_the_count_and_metric_their_restores_yield() {
    let (tmp, dir) = backups();
    let (list, _) = list_json(&dir);
    for (id, file) in [
        (FULL, "expected-full.json"),
        (INC, "expected-incremental.json"),
    ] {
        let b = list
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap();
        // The metadata's vector_count is the snapshot header's (25 and 0 here); the contract's
        // is the live count a restore yields.
        assert_eq!(b["vector_count"], expected(file)["count"], "{id}");
        assert_eq!(b["distance"], "cosine", "{id}");
        assert_eq!(b["dimension"], 8, "{id}");
        let target = tmp.path().join(id);
        let r = kb()
            .backup_dir(&dir)
            .data_dir(&target)
            .args(["restore", "--format", "json", "--backup-id", id])
            .output()
            .unwrap();
        assert!(r.status.success());
        assert_eq!(
            recovered_as_expected_json(&target)["count"],
            b["vector_count"]
        );
    }
    // A damaged archive is still listed, with its metadata's figures and a warning.
    let tar = dir.join(format!("backup_{INC}.tar"));
    let mut bytes = fs::read(&tar).unwrap();
    bytes.truncate(bytes.len() / 2);
    fs::write(&tar, bytes).unwrap();
    let (list, stderr) = list_json(&dir);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(stderr.contains("listed with the figures of its metadata"));
}
