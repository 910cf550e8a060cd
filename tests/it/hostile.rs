//! Repositories that come back from off-site storage modified by someone hostile: manifests
//! with valid checksums that name `../` or absolute paths, symlinks in place of chunks,
//! manifests or directories, absurd sizes, chunks whose decompressed size lies. Each is refused
//! with a clear error, nothing is written outside the target, memory stays bounded.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::support::*;
use kyrodb_backup_format::repo::{decode_manifest, encode_manifest, BackupManifest};
use predicates::prelude::*;

struct Hostile {
    tmp: tempfile::TempDir,
    data: PathBuf,
    repo: PathBuf,
    id: String,
}

fn repo() -> Hostile {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-rotated", &data);
    let b = create(&data, &repo, &[]);
    let id = b["id"].as_str().unwrap().to_string();
    Hostile {
        tmp,
        data,
        repo,
        id,
    }
}

impl Hostile {
    fn manifest_path(&self) -> PathBuf {
        self.repo
            .join("chains")
            .join(&self.id)
            .join("manifests")
            .join(format!("{}.manifest", self.id))
    }
    fn manifest(&self) -> BackupManifest {
        decode_manifest(&fs::read(self.manifest_path()).unwrap()).unwrap()
    }
    /// Rewrites the manifest with a valid checksum: an attacker can recompute XXH3.
    fn forge(&self, m: &BackupManifest) {
        // encode_manifest validates nothing; decode does.
        fs::write(self.manifest_path(), encode_manifest(m).unwrap()).unwrap();
    }
    fn chunks(&self) -> Vec<PathBuf> {
        walk(&self.repo.join("chains").join(&self.id).join("chunks"))
    }
    /// Restore must refuse, leave the target as it was, and write nothing beside it.
    fn restore_refused(&self, expect: &str) {
        let target = self.tmp.path().join("target");
        copy_fixture_data("v4-wal-only", &target);
        let before = tree(&target);
        let outside_before = names(self.tmp.path());
        kb().backup_dir(&self.repo)
            .data_dir(&target)
            .args(["restore", "--backup-id", &self.id])
            .env("BACKUP_ALLOW_CLEAR", "true")
            .assert()
            .failure()
            .stderr(predicate::str::contains(expect));
        assert_eq!(tree(&target), before);
        assert_eq!(
            names(self.tmp.path()),
            outside_before,
            "nothing written beside the target"
        );
        fs::remove_dir_all(&target).unwrap();
    }
    fn verify_fails(&self, expect: &str) {
        kb().backup_dir(&self.repo)
            .args(["verify", "--all"])
            .assert()
            .code(3)
            .stdout(predicate::str::contains(expect));
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn manifests_naming_paths_outside_the_data_dir_are_refused() {
    for evil in [
        "../escaped.wal",
        "/tmp/kyrodb-hostile-absolute.wal",
        "wal_1.wal/../../x",
        "sub/wal_1.wal",
    ] {
        let r = repo();
        let mut m = r.manifest();
        let wal = m
            .files
            .iter()
            .position(|f| f.name.starts_with("wal_"))
            .unwrap();
        m.files[wal].name = evil.to_string();
        r.forge(&m);
        r.verify_fails("is not a KyroDB");
        r.restore_refused("cannot be read");
        assert!(!r.tmp.path().join("escaped.wal").exists());
        assert!(!Path::new("/tmp/kyrodb-hostile-absolute.wal").exists());
    }
}

#[test]
fn symlinks_in_place_of_chunks_manifests_or_directories_are_refused() {
    // A chunk replaced by a symlink to a file with the very same bytes.
    let r = repo();
    let chunk = r.chunks().remove(0);
    let copy = r.tmp.path().join("elsewhere");
    fs::copy(&chunk, &copy).unwrap();
    fs::remove_file(&chunk).unwrap();
    symlink(&copy, &chunk).unwrap();
    r.verify_fails("DAMAGED");
    r.restore_refused("hint:");

    // The manifest replaced by a symlink.
    let r = repo();
    let m = r.manifest_path();
    let copy = r.tmp.path().join("manifest-elsewhere");
    fs::copy(&m, &copy).unwrap();
    fs::remove_file(&m).unwrap();
    symlink(&copy, &m).unwrap();
    r.verify_fails("regular file");

    // The chain's chunk directory replaced by a symlink: create must not write through it.
    let r = repo();
    let chunks = r.repo.join("chains").join(&r.id).join("chunks");
    let outside = r.tmp.path().join("outside-chunks");
    fs::rename(&chunks, &outside).unwrap();
    symlink(&outside, &chunks).unwrap();
    let before = names(&outside);
    fs::write(
        r.data.join("MANIFEST"),
        fs::read(r.data.join("MANIFEST")).unwrap(),
    )
    .unwrap();
    kb().backup_dir(&r.repo)
        .data_dir(&r.data)
        .args(["create", "--incremental", "--reference", "latest"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("is a symlink"));
    assert_eq!(names(&outside), before);
    r.restore_refused("is a symlink");
}

#[test]
fn absurd_sizes_and_counts_are_refused_without_allocating_them() {
    let r = repo();
    let mut m = r.manifest();
    m.files[1].chunks[0].size = u32::MAX;
    r.forge(&m);
    r.verify_fails("impossible size");

    let r = repo();
    let mut m = r.manifest();
    m.files[1].size = u64::MAX;
    r.forge(&m);
    r.verify_fails("add up");

    // A 100 MiB manifest (sparse) is refused by its size, before it is read.
    let r = repo();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(r.manifest_path())
        .unwrap();
    f.set_len(100 << 20).unwrap();
    r.verify_fails("too large for a manifest");
}

#[test]
fn a_chunk_whose_decompressed_size_lies_is_refused() {
    let r = repo();
    let mut m = r.manifest();
    // The manifest claims one byte less than the chunk holds, and the chunk header agrees.
    let (fi, ci) = (1, 0);
    let c = m.files[fi].chunks[ci];
    let path = r
        .repo
        .join("chains")
        .join(&r.id)
        .join("chunks")
        .join(&c.hash.to_hex()[..2])
        .join(c.hash.to_hex());
    let mut bytes = fs::read(&path).unwrap();
    let lie = c.size - 1;
    bytes[8..12].copy_from_slice(&lie.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    m.files[fi].chunks[ci].size = lie;
    m.files[fi].size -= 1;
    r.forge(&m);
    r.verify_fails("DAMAGED");
    r.restore_refused("hint:");
}
