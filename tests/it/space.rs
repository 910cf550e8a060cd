//! A full file system: a `create` that runs out of space removes what it wrote and says so in
//! one line with a hint; a restore that runs out of space leaves the data dir as it was and no
//! staging behind. The file systems are small tmpfs mounts made here, which needs root (CI runs
//! as root); without it, the storage crate's fault-injection test covers the same cleanup.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use kyrodb_backup_format::engine::{
    write_v4_snapshot, DataDirManifest, DistanceMetric, V4SnapshotOptions,
};

/// A tmpfs of `size` mounted at `dir` for as long as it lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        assert!(Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

/// A data dir with a V4 snapshot of `docs` random (incompressible) vectors of dimension 64.
fn random_data_dir(dir: &Path, docs: u64) {
    fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(0x5eed);
    let vectors: Vec<Vec<f32>> = (0..docs)
        .map(|_| {
            (0..64)
                .map(|_| (rng.below(1 << 24) as f32) / 16_777_216.0)
                .collect()
        })
        .collect();
    let mut bytes = Vec::new();
    write_v4_snapshot(
        &mut bytes,
        &V4SnapshotOptions {
            timestamp: 1_760_970_600,
            dimension: 64,
            distance: DistanceMetric::Euclidean,
            last_wal_seq: 0,
            count: docs,
        },
        |i| {
            (
                i + 1,
                vectors[i as usize].clone(),
                vec![("n".into(), i.to_string())],
            )
        },
    )
    .unwrap();
    fs::write(dir.join("snapshot_1.snap"), bytes).unwrap();
    let m = DataDirManifest::modern(
        Some("snapshot_1.snap".into()),
        Some(0),
        vec![],
        1_760_970_600,
    );
    fs::write(dir.join("MANIFEST"), m.to_bytes()).unwrap();
}

/// Every path under `dir` (directories too) with its size: what "the repository as it was"
/// means here.
fn footprint(dir: &Path) -> Vec<(String, u64)> {
    walk_all(dir)
        .into_iter()
        .map(|p| {
            let len = if p.is_dir() {
                0
            } else {
                fs::metadata(&p).unwrap().len()
            };
            (p.strip_prefix(dir).unwrap().display().to_string(), len)
        })
        .collect()
}

#[test]
fn a_create_that_fills_the_disk_cleans_up_and_says_what_to_do() {
    if !is_root() {
        eprintln!("space: not root, no tmpfs; storage's fault-injection test covers the cleanup");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let small = Tmpfs::mount(&tmp.path().join("small"), "1m").expect("mount a tmpfs as root");
    let repo = small.0.join("backups");
    let data = tmp.path().join("data");
    copy_fixture_data("v4-basic", &data);
    create(&data, &repo, &[]);
    let big = tmp.path().join("big");
    random_data_dir(&big, 8_000); // about 2 MiB of vectors that do not compress
    let before = footprint(&repo);

    let out = kb()
        .data_dir(&big)
        .backup_dir(&repo)
        .args(["create", "--description", "too big"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one error line and one hint: {err}");
    assert!(
        lines[0].starts_with(&format!(
            "error: no space left on the file system of {}",
            repo.display()
        )),
        "{err}"
    );
    assert!(
        lines[0].contains("needed up to") && lines[0].contains("is free"),
        "{err}"
    );
    assert!(lines[1].starts_with("hint: free space there"), "{err}");
    assert_eq!(
        footprint(&repo),
        before,
        "the failed create left nothing behind"
    );
    kb().backup_dir(&repo)
        .args(["verify", "--all"])
        .assert()
        .success();

    // A dry run says how much the backup would add, and writes nothing.
    let dry = kb()
        .data_dir(&big)
        .backup_dir(&repo)
        .args(["create", "--dry-run", "--format", "json"])
        .output()
        .unwrap();
    assert!(dry.status.success());
    let would: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(would["dry_run"], true);
    let would_add = would["stored_bytes"].as_u64().unwrap();
    assert!(would_add > 1 << 20, "{would_add}");
    assert_eq!(footprint(&repo), before);

    // Once there is room, the same create succeeds and adds what the dry run said.
    small.resize("16m");
    let made = create(&big, &repo, &[]);
    let id = made["id"].as_str().unwrap();
    let manifest = fs::metadata(
        repo.join("chains")
            .join(id)
            .join("manifests")
            .join(format!("{id}.manifest")),
    )
    .unwrap()
    .len();
    // What the dry run said it would add: the chunks, and the manifest (whose size differs by
    // the digits of its own figures).
    let added = made["stored_bytes"].as_u64().unwrap() + manifest;
    assert!(
        would_add.abs_diff(added) < 64,
        "dry run {would_add}, added {added}"
    );
    kb().backup_dir(&repo)
        .args(["verify", "--all"])
        .assert()
        .success();
}

#[test]
fn a_restore_that_fills_the_disk_leaves_the_data_dir_as_it_was() {
    if !is_root() {
        eprintln!("space: not root, no tmpfs; the staging cleanup is covered without it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("backups");
    let big = tmp.path().join("big");
    random_data_dir(&big, 8_000);
    let id = create(&big, &repo, &[])["id"].as_str().unwrap().to_string();
    let small = Tmpfs::mount(&tmp.path().join("small"), "1m").expect("mount a tmpfs as root");
    let target = small.0.join("data");
    copy_fixture_data("v4-basic", &target);
    let before = tree(&target);
    let out = kb()
        .backup_dir(&repo)
        .data_dir(&target)
        .env("BACKUP_ALLOW_CLEAR", "true")
        .args(["restore", "--backup-id", &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: no space left on the file system of"),
        "{err}"
    );
    assert!(
        err.contains("hint: free space there, or restore into a directory on a bigger volume"),
        "{err}"
    );
    assert_eq!(tree(&target), before, "the data dir is as it was");
    let names: Vec<String> = fs::read_dir(&small.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["data"], "no staging left behind");
}
