//! Incrementals that take unchanged files over from their reference without reading them, and
//! the snapshot id lists that let them count live documents from the WAL alone.

use std::fs;
use std::path::Path;

use crate::support::engine::Engine;
use crate::support::*;
use kyrodb_backup_format::engine::{
    recover, DirSource, LiveIds, Metadata, RecoveryOptions, SnapshotInfo, StateSink,
};
use kyrodb_backup_format::repo::{
    encode_manifest, BackupManifest, ContentHash, FileKind, SnapshotIdRecorder,
};
use kyrodb_backup_storage::{
    create_backup, CreateOptions, CreateReport, NoProgress, Repository, StoreStats,
};
use kyrodb_backup_verify::verify_backup;

/// Backup number `n` of `data` (its id and clock derive from `n`).
fn try_backup(
    repo: &Repository,
    data: &Path,
    parent: Option<&BackupManifest>,
    n: u64,
) -> kyrodb_backup_storage::Result<CreateReport> {
    create_backup(
        repo,
        &CreateOptions {
            data_dir: data.to_path_buf(),
            id: format!("00000000-0000-4000-8000-{n:012x}"),
            now: 1_800_000_000 + n,
            now_subsec_nanos: 0,
            description: String::new(),
            tool_version: "test".into(),
            parent: parent.cloned(),
            dry_run: false,
            golden: None,
        },
        &NoProgress,
    )
}

fn backup(repo: &Repository, data: &Path, parent: Option<&BackupManifest>, n: u64) -> CreateReport {
    try_backup(repo, data, parent, n).unwrap()
}

/// A temporary place with a data dir written by the engine (`dimension`, then `build`) and an
/// empty repository.
fn setup(
    dimension: usize,
    build: impl FnOnce(&mut Engine),
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    Repository,
) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo_dir = tmp.path().join("backups");
    let repo = Repository::open_or_init(&repo_dir).unwrap();
    let mut e = Engine::open(&data, dimension);
    build(&mut e);
    drop(e);
    (tmp, data, repo_dir, repo)
}

fn live_count(dir: &Path) -> u64 {
    let mut ids = LiveIds::default();
    recover(
        &mut DirSource::new(dir),
        &mut ids,
        &RecoveryOptions::default(),
    )
    .unwrap();
    ids.len() as u64
}

fn assert_verifies_and_restores(repo: &Repository, repo_dir: &Path, data: &Path, id: &str) {
    let b = repo.find(id).unwrap();
    let check = verify_backup(repo, &b, &NoProgress);
    assert!(check.ok, "{id}: {:?}", check.problems);
    let target = repo_dir.with_file_name(format!("restored-{id}"));
    kb().backup_dir(repo_dir)
        .data_dir(&target)
        .args(["restore", "--backup-id", id])
        .assert()
        .success();
    assert_eq!(tree(&target), consistent_state_files(data));
}

/// Writes that touch the snapshot's documents: deletes, re-inserts, metadata updates, and
/// documents the snapshot never had.
fn churn(e: &mut Engine, from: u64, n: u64) {
    for i in from..from + n {
        e.insert(i, i);
        if i % 3 == 0 {
            e.delete(i % 200);
        }
        if i % 5 == 0 {
            e.update(i % 150, "t");
        }
        if i % 11 == 0 {
            e.insert(i % 100, i);
        }
    }
}

#[test]
fn unchanged_files_are_taken_over_and_the_count_comes_from_the_id_list() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo_dir = tmp.path().join("backups");
    let repo = Repository::open_or_init(&repo_dir).unwrap();
    let mut e = Engine::open(&data, 8);
    churn(&mut e, 0, 300);
    e.snapshot();
    churn(&mut e, 300, 100);
    e.rotate();
    churn(&mut e, 400, 100);

    let full = backup(&repo, &data, None, 1);
    let fm = &full.backup.manifest;
    let ids = fm
        .snapshot_ids
        .as_ref()
        .expect("the snapshot's ids are recorded");
    assert_eq!(Some(ids.count), fm.snapshot.as_ref().map(|s| s.doc_count));
    assert_eq!(
        full.stats.unchanged_files, 0,
        "a full backup reads everything"
    );
    assert_eq!(fm.vector_count, live_count(&data));

    // The engine appends to its newest segment only.
    churn(&mut e, 500, 40);
    let inc = backup(&repo, &data, Some(fm), 2);
    let im = &inc.backup.manifest;
    let files = fm.files.len() as u64;
    assert_eq!(
        inc.stats.unchanged_files,
        files - 2,
        "all but the MANIFEST and the growing segment"
    );
    let snap = |m: &BackupManifest| {
        m.files
            .iter()
            .find(|f| f.kind == FileKind::Snapshot)
            .cloned()
            .unwrap()
    };
    assert_eq!(snap(im), snap(fm));
    assert_eq!(im.snapshot_ids, fm.snapshot_ids, "the list is shared");
    assert_eq!(im.vector_count, live_count(&data));
    assert!(
        im.stored_bytes < fm.stored_bytes / 4,
        "{} vs {}",
        im.stored_bytes,
        fm.stored_bytes
    );
    assert_verifies_and_restores(&repo, &repo_dir, &data, &im.id);

    // A new snapshot (and the compaction after it): read, and a new list recorded.
    e.snapshot();
    churn(&mut e, 540, 60);
    let inc2 = backup(&repo, &data, Some(im), 3);
    let m2 = &inc2.backup.manifest;
    assert_eq!(inc2.stats.unchanged_files, 0);
    let ids2 = m2.snapshot_ids.as_ref().unwrap();
    assert_ne!(Some(ids2), im.snapshot_ids.as_ref());
    assert_eq!(Some(&ids2.snapshot), m2.snapshot.as_ref().map(|s| &s.file));
    assert_eq!(m2.vector_count, live_count(&data));
    assert_verifies_and_restores(&repo, &repo_dir, &data, &m2.id);

    // Nothing changed at all: everything but the MANIFEST is taken over.
    let inc3 = backup(&repo, &data, Some(m2), 4);
    assert_eq!(
        inc3.stats.unchanged_files,
        m2.files.len() as u64 - 1,
        "{:?}",
        inc3.stats
    );
    assert_eq!(inc3.stats.new_chunks, 0);
    assert_eq!(inc3.backup.manifest.vector_count, m2.vector_count);
}

#[test]
fn a_file_changed_in_place_with_its_old_size_and_mtime_is_read_again() {
    let (_tmp, data, _, repo) = setup(8, |e| {
        churn(e, 0, 100);
        e.snapshot();
        churn(e, 100, 50);
    });
    let full = backup(&repo, &data, None, 1);
    let old = full.backup.manifest.snapshot.as_ref().unwrap().file.clone();
    // Damage the snapshot in place, keeping its size and modification time: only the change
    // time gives it away. Taken over, the damage would pass unseen (the id list spares reading
    // it); read again, its CRC fails the backup.
    let path = data.join(&old);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    let Err(err) = try_backup(&repo, &data, Some(&full.backup.manifest), 2) else {
        panic!("the damaged snapshot went unnoticed");
    };
    assert!(err.to_string().contains(&old), "{err}");
}

#[test]
fn an_incremental_whose_reference_lost_a_chunk_reads_the_file_and_repairs_it() {
    let (_tmp, data, repo_dir, repo) = setup(8, |e| {
        churn(e, 0, 200);
        e.snapshot();
        churn(e, 200, 20);
    });
    let full = backup(&repo, &data, None, 1);
    let fm = &full.backup.manifest;
    let store = repo.chain_store(&fm.chain_id).unwrap();
    let snap = fm
        .files
        .iter()
        .find(|f| f.kind == FileKind::Snapshot)
        .unwrap();
    fs::remove_file(store.chunk_path(snap.chunks[0].hash)).unwrap();
    let list = fm.snapshot_ids.as_ref().unwrap();
    fs::remove_file(store.chunk_path(list.chunks[0].hash)).unwrap();

    let inc = backup(&repo, &data, Some(fm), 2);
    assert_eq!(
        inc.stats.unchanged_files,
        fm.files.len() as u64 - 2,
        "all but the MANIFEST and the snapshot that lost a chunk"
    );
    assert!(store.contains(snap.chunks[0].hash), "repaired");
    assert!(store.contains(list.chunks[0].hash), "list stored again");
    assert_eq!(inc.backup.manifest.snapshot_ids, fm.snapshot_ids);
    assert_verifies_and_restores(&repo, &repo_dir, &data, &inc.backup.manifest.id);
    let check = verify_backup(&repo, &repo.find(&fm.id).unwrap(), &NoProgress);
    assert!(
        check.ok,
        "the full backup is whole again: {:?}",
        check.problems
    );
}

/// Passes every id on shifted by one: a list with the right length and the wrong ids.
struct Shifted<'a>(&'a mut dyn StateSink);

impl StateSink for Shifted<'_> {
    fn insert(&mut self, id: u64, e: Vec<f32>, m: Metadata) {
        self.0.insert(id + 1, e, m);
    }
    fn delete(&mut self, id: u64) {
        self.0.delete(id + 1);
    }
    fn update_metadata(&mut self, id: u64, m: Metadata) {
        self.0.update_metadata(id + 1, m);
    }
    fn wants_contents(&self) -> bool {
        false
    }
    fn snapshot_loaded(&mut self, info: &SnapshotInfo) {
        self.0.snapshot_loaded(info);
    }
}

#[test]
fn verify_compares_the_id_list_with_the_snapshot() {
    let (_tmp, data, _, repo) = setup(8, |e| {
        churn(e, 0, 100);
        e.snapshot();
    });
    let full = backup(&repo, &data, None, 1);
    let mut m = full.backup.manifest.clone();

    // A well-formed list, correctly hashed and stored, of the wrong ids.
    let mut ids = LiveIds::default();
    let mut rec = SnapshotIdRecorder::new(&mut ids);
    recover(
        &mut DirSource::new(&data),
        &mut Shifted(&mut rec),
        &RecoveryOptions::default(),
    )
    .unwrap();
    let (forged, count) = rec.finish().unwrap();
    let list = m.snapshot_ids.as_mut().unwrap();
    assert_eq!(count, list.count);
    assert_ne!(ContentHash::of(&forged), list.hash);
    let store = repo.chain_store(&m.chain_id).unwrap();
    let entry = store
        .store_file(
            forged.as_slice(),
            "forged",
            FileKind::Snapshot,
            &mut StoreStats::default(),
            &NoProgress,
        )
        .unwrap();
    store.sync().unwrap();
    list.hash = entry.hash;
    list.size = entry.size;
    list.chunks = entry.chunks;
    fs::write(
        repo.manifest_path(&m.chain_id, &m.id),
        encode_manifest(&m).unwrap(),
    )
    .unwrap();

    let check = verify_backup(&repo, &repo.find(&m.id).unwrap(), &NoProgress);
    assert!(!check.ok);
    assert!(
        check
            .problems
            .iter()
            .any(|p| p.message.contains("does not match the ids")),
        "{:?}",
        check.problems
    );
}

/// `create` over a data dir whose files are damaged fails with the file named, commits no
/// manifest, and does not hang whichever side of the read-once pipeline meets the damage first.
#[test]
fn create_over_damaged_data_fails_cleanly_wherever_the_damage_is() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let mut e = Engine::open(&pristine, 256);
    churn(&mut e, 0, 4000);
    e.snapshot();
    churn(&mut e, 4000, 50);
    drop(e);
    let snapshot_name = fs::read_dir(&pristine)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("snapshot_"))
        .unwrap();
    let len = fs::metadata(pristine.join(&snapshot_name)).unwrap().len() as usize;
    assert!(len > 3 << 20, "the snapshot spans several chunks: {len}");
    // Early (the magic: the replay stops at once while the snapshot is still being stored),
    // in the middle, and in the last byte (found only by the CRC at the end).
    for at in [0, len / 2, len - 1] {
        let data = tmp.path().join(format!("data-{at}"));
        copy_dir(&pristine, &data);
        let path = data.join(&snapshot_name);
        let mut bytes = fs::read(&path).unwrap();
        bytes[at] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        let repo_dir = tmp.path().join(format!("repo-{at}"));
        let repo = Repository::open_or_init(&repo_dir).unwrap();
        let Err(err) = try_backup(&repo, &data, None, 1) else {
            panic!("damage at {at} went unnoticed");
        };
        assert!(err.to_string().contains(&snapshot_name), "at {at}: {err}");
        assert!(repo.list().unwrap().backups.is_empty(), "at {at}");
    }
}
