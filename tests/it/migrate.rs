//! `migrate` and `restore --distance` on legacy data directories built from the engine's legacy
//! fixtures: every snapshot layout, W1 and W2 WAL, with and without `--distance`.

use std::fs;
use std::path::Path;

use crate::support::*;
use kyrodb_backup_format::engine::{
    recover, DirSource, DistanceMetric, FullState, RecoveryOptions, Snapshot, SnapshotLayout,
    WalReader,
};
use predicates::prelude::*;

const LAYOUTS: [(&str, SnapshotLayout); 5] = [
    ("snapshot_v1.snap", SnapshotLayout::V1),
    ("snapshot_v2.snap", SnapshotLayout::LegacyV2),
    ("snapshot_v2_distance.snap", SnapshotLayout::V2WithMetric),
    ("snapshot_v3.snap", SnapshotLayout::V3),
    ("snapshot_v3_ann.snap", SnapshotLayout::V3WithAnn),
];

fn state(dir: &Path) -> FullState {
    let mut s = FullState::default();
    recover(
        &mut DirSource::new(dir),
        &mut s,
        &RecoveryOptions::default(),
    )
    .unwrap();
    s
}

fn migrate(dir: &Path, extra: &[&str]) -> std::process::Output {
    kb().data_dir(dir)
        .args(["migrate", "--format", "json"])
        .args(extra)
        .output()
        .unwrap()
}

fn stored_metric(snapshot: &str) -> Option<DistanceMetric> {
    Snapshot::read(fs::File::open(fixtures().join("kyrodb/legacy").join(snapshot)).unwrap())
        .unwrap()
        .distance
}

#[test]
fn every_legacy_layout_migrates_to_v4_with_the_same_state() {
    for (snapshot, layout) in LAYOUTS {
        for wal in ["wal_v1.wal", "wal_v2.wal"] {
            for requested in [None, Some(DistanceMetric::Euclidean)] {
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path().join("data");
                legacy_dir(&dir, snapshot, wal);
                let before = state(&dir);
                let legacy =
                    Snapshot::read(fs::File::open(dir.join("snapshot_1760970600")).unwrap())
                        .unwrap();
                assert_eq!(legacy.layout, layout);
                let stored = stored_metric(snapshot);
                let args: Vec<String> = requested
                    .map(|d| vec!["--distance".into(), d.to_string()])
                    .unwrap_or_default();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = migrate(&dir, &args);
                if let (Some(s), Some(r)) = (stored, requested) {
                    if s != r {
                        assert_eq!(
                            out.status.code(),
                            Some(1),
                            "{snapshot}: contradiction refused"
                        );
                        assert!(String::from_utf8_lossy(&out.stderr).contains("contradicts"));
                        assert_eq!(state(&dir), before);
                        assert!(dir.join("snapshot_1760970600").exists(), "nothing changed");
                        continue;
                    }
                }
                assert!(
                    out.status.success(),
                    "{snapshot} {wal}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let want = stored.or(requested).unwrap_or(DistanceMetric::Cosine);
                assert_eq!(r["distance"], want.to_string(), "{snapshot}");
                let assumed = stored.is_none() && requested.is_none();
                assert_eq!(r["distance_source"] == "assumed", assumed);
                let stderr = String::from_utf8_lossy(&out.stderr);
                if assumed {
                    assert!(stderr.contains("assuming cosine"), "{stderr}");
                    assert!(stderr.contains("timestamp 1760970600"), "{stderr}");
                    assert!(
                        stderr.contains(&format!("{} documents", legacy.documents.len())),
                        "{stderr}"
                    );
                } else {
                    assert!(!stderr.contains("assuming"), "{stderr}");
                }
                // The V4 snapshot, field by field.
                let m: serde_json::Value =
                    serde_json::from_slice(&fs::read(dir.join("MANIFEST")).unwrap()).unwrap();
                assert_eq!(m["latest_snapshot"], "snapshot_1760970600.snap");
                let v4 =
                    Snapshot::read(fs::File::open(dir.join("snapshot_1760970600.snap")).unwrap())
                        .unwrap();
                assert_eq!(v4.layout, SnapshotLayout::V4);
                assert_eq!(v4.distance, Some(want));
                assert_eq!(v4.timestamp, legacy.timestamp);
                assert_eq!(v4.documents, legacy.documents);
                assert_eq!(v4.doc_count, legacy.documents.len() as u64);
                assert_eq!(v4.last_wal_seq, legacy.last_wal_seq);
                if layout == SnapshotLayout::V1 {
                    assert!(v4.metadata.iter().all(|(_, m)| m.is_empty()));
                    assert_eq!(v4.metadata.len(), v4.documents.len());
                } else {
                    assert_eq!(v4.metadata, legacy.metadata);
                }
                // The WAL is W3 now and replays to the same state.
                let bytes = fs::read(dir.join("wal_1760970600000001.wal")).unwrap();
                let mut rd = WalReader::new(bytes.as_slice()).unwrap();
                while let Some(f) = rd.next_frame().unwrap() {
                    assert_eq!(f.layout, kyrodb_backup_format::engine::WalLayout::W3);
                    assert!(f.entry.seq_no > v4.last_wal_seq);
                }
                assert_eq!(
                    state(&dir),
                    before,
                    "{snapshot} {wal}: same documents, vectors, metadata"
                );
                // The legacy files are kept beside it.
                let kept = Path::new(r["previous"].as_str().unwrap());
                assert!(kept.join("snapshot_1760970600").exists());
            }
        }
    }
}

#[test]
fn dry_run_reports_the_evidence_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    legacy_dir(&dir, "snapshot_v2.snap", "wal_v2.wal");
    let before = tree(&dir);
    kb().data_dir(&dir)
        .args(["migrate", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("LegacyV2"))
        .stdout(predicate::str::contains("have unit L2 norm"))
        .stdout(predicate::str::contains("would migrate"))
        .stderr(predicate::str::contains("assuming cosine"));
    assert_eq!(tree(&dir), before);
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no staging left: {names:?}");
}

#[test]
fn a_backup_of_a_legacy_dir_records_an_unknown_metric_and_restores_migrated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    legacy_dir(&dir, "snapshot_v2.snap", "wal_v2.wal");
    let before = state(&dir);
    let b = create(&dir, &repo, &[]);
    assert_eq!(b["distance"], serde_json::Value::Null);
    assert_eq!(b["snapshot"]["version"], 2);
    kb().backup_dir(&repo)
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("unknown"));
    kb().backup_dir(&repo)
        .args(["show", b["id"].as_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("metric unknown"));
    let target = tmp.path().join("restored");
    kb().backup_dir(&repo)
        .data_dir(&target)
        .args([
            "restore",
            "--distance",
            "innerproduct",
            "--backup-id",
            b["id"].as_str().unwrap(),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("metric innerproduct"));
    let v4 =
        Snapshot::read(fs::File::open(target.join("snapshot_1760970600.snap")).unwrap()).unwrap();
    assert_eq!(v4.distance, Some(DistanceMetric::InnerProduct));
    assert_eq!(state(&target), before);
    assert!(!target.join("snapshot_1760970600").exists());
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 3, "data, backups, restored: {leftovers:?}");
}

#[test]
fn restore_distance_contradicting_a_stored_metric_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-basic", &data);
    let b = create(&data, &repo, &[]);
    let target = tmp.path().join("restored");
    kb().backup_dir(&repo)
        .data_dir(&target)
        .args([
            "restore",
            "--distance",
            "euclidean",
            "--backup-id",
            b["id"].as_str().unwrap(),
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("contradicts the metric cosine"));
    assert!(!target.exists());
    // The same metric is fine (nothing to migrate).
    kb().backup_dir(&repo)
        .data_dir(&target)
        .args([
            "restore",
            "--distance",
            "cosine",
            "--backup-id",
            b["id"].as_str().unwrap(),
        ])
        .assert()
        .success();
    assert_eq!(tree(&target), consistent_state_files(&data));
}
