//! `create` and `restore` killed with SIGKILL at many instants: the repository stays readable
//! and every committed backup verifies; a data dir being restored is wholly old or wholly new;
//! the next run cleans up what the killed one left.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;
use kyrodb_backup_format::{
    write_v4_snapshot, DataDirManifest, DistanceMetric, V4SnapshotOptions, WalEntry, WalLayout,
    WalOp, WalWriter,
};

/// A data dir in the engine's format, big enough (~12 MB) that a create or restore takes a
/// while: a V4 snapshot of 20,000 vectors of dimension 128 and two WAL segments.
fn write_data_dir(dir: &Path, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    let vec_of = |i: u64| -> Vec<f32> {
        (0..128)
            .map(|j| ((i * 131 + j + seed) % 997) as f32 / 997.0)
            .collect()
    };
    let snap = "snapshot_1795000000000000.snap";
    let f = std::io::BufWriter::new(fs::File::create(dir.join(snap)).unwrap());
    let opts = V4SnapshotOptions {
        timestamp: 1_795_000_000,
        dimension: 128,
        distance: DistanceMetric::Euclidean,
        last_wal_seq: 20_000,
        count: 20_000,
    };
    write_v4_snapshot(f, &opts, |i| {
        (i + 1, vec_of(i), vec![("n".into(), i.to_string())])
    })
    .unwrap();
    let mut names = Vec::new();
    let mut seq = 20_000;
    for s in 0..2 {
        let name = format!("wal_{}.wal", 1_795_000_000_000_001_u64 + s);
        let mut w = WalWriter::new(fs::File::create(dir.join(&name)).unwrap()).unwrap();
        for _ in 0..1000 {
            seq += 1;
            let e = WalEntry {
                op: WalOp::Insert,
                doc_id: seq,
                embedding: vec_of(seq),
                metadata: vec![],
                seq_no: seq,
                timestamp: 1_795_000_001 + seq / 100,
            };
            w.append(&e, WalLayout::W3).unwrap();
        }
        names.push(name);
    }
    let m = DataDirManifest::modern(Some(snap.into()), Some(20_000), names, 1_795_000_000);
    fs::write(dir.join("MANIFEST"), m.to_bytes()).unwrap();
}

/// Kill instants: ten spread over 0..200 ms, or `KYRODB_KILL_ROUNDS` pseudo-random ones
/// (`cargo xtask crash N`).
fn delays_ms() -> Vec<u64> {
    match std::env::var("KYRODB_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        None => vec![0, 1, 3, 6, 10, 20, 35, 60, 100, 200],
        Some(n) => {
            let mut x = 0x2545_F491_4F6C_DD1D_u64;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % 250
                })
                .collect()
        }
    }
}

#[test]
fn create_killed_at_any_instant_leaves_a_repository_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    write_data_dir(&data, 1);
    let first = create(&data, &repo, &[]);
    for delay in delays_ms() {
        let mut child = kb_process()
            .arg("--data-dir")
            .arg(&data)
            .arg("--backup-dir")
            .arg(&repo)
            .arg("create")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        child.wait().unwrap();
        // Whatever the kill left, every backup the repository lists verifies.
        let out = kb()
            .arg("--backup-dir")
            .arg(&repo)
            .args(["verify", "--all", "--format", "json"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "after a kill at {delay} ms: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The next create succeeds and removes temporary leftovers.
    let last = create(
        &data,
        &repo,
        &[
            "--incremental",
            "--reference",
            first["id"].as_str().unwrap(),
        ],
    );
    assert_eq!(last["parent_id"], first["id"]);
    let leftovers: Vec<_> = walk_names(&repo)
        .into_iter()
        .filter(|n| n.contains(".kbtmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_names(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn restore_killed_at_any_instant_leaves_the_data_dir_wholly_old_or_wholly_new() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let repo = tmp.path().join("backups");
    write_data_dir(&source, 2);
    let b = create(&source, &repo, &[]);
    let new_tree = consistent_state_files(&source);
    let target = tmp.path().join("data");
    write_data_dir(&target, 3);
    let old_tree = tree(&target);
    let mut outcomes = [0usize; 2];
    for delay in delays_ms() {
        let mut child = kb_process()
            .arg("--data-dir")
            .arg(&target)
            .arg("--backup-dir")
            .arg(&repo)
            .args(["restore", "--keep-previous", "--backup-id"])
            .arg(b["id"].as_str().unwrap())
            .env("BACKUP_ALLOW_CLEAR", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        child.wait().unwrap();
        let now = tree(&target);
        if now == old_tree {
            outcomes[0] += 1;
        } else {
            assert_eq!(now, new_tree, "kill at {delay} ms left a mixture");
            outcomes[1] += 1;
            // Put the old contents back for the next round.
            fs::remove_dir_all(&target).unwrap();
            write_data_dir(&target, 3);
        }
        for e in fs::read_dir(tmp.path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with("data.previous-") {
                fs::remove_dir_all(tmp.path().join(name)).unwrap();
            }
        }
    }
    eprintln!(
        "restore kills: {} left the old state, {} the new",
        outcomes[0], outcomes[1]
    );
    // A completed restore afterwards cleans the staging directories of the killed ones.
    kb().arg("--data-dir")
        .arg(&target)
        .arg("--backup-dir")
        .arg(&repo)
        .args(["restore", "--backup-id"])
        .arg(b["id"].as_str().unwrap())
        .env("BACKUP_ALLOW_CLEAR", "true")
        .assert()
        .success();
    assert_eq!(tree(&target), new_tree);
    let names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("kyrodb-restore")),
        "staging left behind: {names:?} (outcomes old/new: {outcomes:?})"
    );
}
