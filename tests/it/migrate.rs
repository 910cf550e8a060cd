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

/// Every file under `dir` that the current engine reads, decoded: the MANIFEST is JSON, the
/// snapshot V4 with `metric`, every WAL entry W3 with a sequence number.
fn assert_current(dir: &Path, metric: DistanceMetric) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("MANIFEST")).unwrap()).expect("JSON MANIFEST");
    let snap = manifest["latest_snapshot"].as_str().unwrap();
    let v4 = Snapshot::read(fs::File::open(dir.join(snap)).unwrap()).unwrap();
    assert_eq!((v4.layout, v4.distance), (SnapshotLayout::V4, Some(metric)));
    for seg in manifest["wal_segments"].as_array().unwrap() {
        let mut r =
            WalReader::new(fs::File::open(dir.join(seg.as_str().unwrap())).unwrap()).unwrap();
        while let Some(f) = r.next_frame().unwrap() {
            assert_eq!(f.layout, kyrodb_backup_format::engine::WalLayout::W3);
            assert_ne!(f.entry.seq_no, 0);
        }
    }
}

#[test]
fn a_legacy_backup_restores_migrated_refused_or_as_is_never_unstartable() {
    for (snapshot, layout) in LAYOUTS {
        for wal in ["wal_v1.wal", "wal_v2.wal"] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("data");
            let repo = tmp.path().join("backups");
            legacy_dir(&dir, snapshot, wal);
            let before = state(&dir);
            let id = create(&dir, &repo, &[])["id"].as_str().unwrap().to_string();
            let target = tmp.path().join("restored");
            let restore = |extra: &[&str]| {
                kb().backup_dir(&repo)
                    .data_dir(&target)
                    .args(["restore", "--format", "json", "--backup-id", &id])
                    .args(extra)
                    .output()
                    .unwrap()
            };
            let case = format!("{snapshot} ({layout:?}) + {wal}");
            // verify says what a restore will have to do, without calling the backup damaged.
            let v = kb()
                .backup_dir(&repo)
                .args(["verify", "--format", "json", &id])
                .output()
                .unwrap();
            assert!(v.status.success(), "{case}");
            let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
            let expect = if stored_metric(snapshot).is_some() {
                "migrates"
            } else {
                "needs-metric"
            };
            assert_eq!(v["backups"][0]["current_engine"], expect, "{case}");
            if let Some(metric) = stored_metric(snapshot) {
                // The snapshot stores its metric: migrated in the same staged pass.
                let out = restore(&[]);
                assert!(
                    out.status.success(),
                    "{case}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(r["migrated"]["distance"], metric.to_string(), "{case}");
                assert_eq!(r["migrated"]["source"], "stored", "{case}");
                assert_current(&target, metric);
                assert_eq!(
                    state(&target),
                    before,
                    "{case}: same documents, vectors, metadata"
                );
                assert!(!target.join("snapshot_1760970600").exists(), "{case}");
            } else {
                // No stored metric: refused before anything is written, naming the evidence.
                let out = restore(&[]);
                assert_eq!(out.status.code(), Some(4), "{case}");
                let err = String::from_utf8_lossy(&out.stderr);
                for evidence in [
                    "stores no distance metric",
                    "documents",
                    "unit norm",
                    "--distance",
                    "--as-is",
                ] {
                    assert!(err.contains(evidence), "{case}: {evidence} in {err}");
                }
                assert!(!target.exists(), "{case}: nothing written");
                // With a metric it is migrated with that one.
                let out = restore(&["--distance", "euclidean"]);
                assert!(
                    out.status.success(),
                    "{case}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(r["migrated"]["source"], "requested");
                assert_current(&target, DistanceMetric::Euclidean);
                assert_eq!(state(&target), before, "{case}");
                fs::remove_dir_all(&target).unwrap();
            }
            if target.exists() {
                fs::remove_dir_all(&target).unwrap();
            }
            // --as-is gives the legacy bytes back, for an older engine.
            let out = restore(&["--as-is"]);
            assert!(
                out.status.success(),
                "{case}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(r["migrated"], serde_json::Value::Null);
            assert_eq!(tree(&target), tree(&dir), "{case}: the original bytes");
        }
    }
}

/// A data dir of a V3 snapshot (which records `last_wal_seq`) and W3 entries after it, one a
/// second, so that point-in-time restore can rebuild its seconds.
fn v3_dir_with_w3_wal(dir: &Path, snapshot: &str) -> (Snapshot, u64) {
    use kyrodb_backup_format::engine::{DataDirManifest, WalEntry, WalLayout, WalOp, WalWriter};
    fs::create_dir_all(dir).unwrap();
    let snap =
        Snapshot::read(fs::File::open(fixtures().join("kyrodb/legacy").join(snapshot)).unwrap())
            .unwrap();
    fs::copy(
        fixtures().join("kyrodb/legacy").join(snapshot),
        dir.join("snapshot_1.snap"),
    )
    .unwrap();
    let mut w = WalWriter::new(Vec::new()).unwrap();
    for i in 1..=3u64 {
        let entry = WalEntry {
            op: WalOp::Insert,
            doc_id: 10_000 + i,
            embedding: vec![0.5; snap.dimension as usize],
            metadata: vec![],
            seq_no: snap.last_wal_seq + i,
            timestamp: snap.timestamp + 10 * i,
        };
        w.append(&entry, WalLayout::W3).unwrap();
    }
    fs::write(dir.join("wal_1.wal"), w.into_inner()).unwrap();
    let m = DataDirManifest::modern(
        Some("snapshot_1.snap".into()),
        Some(snap.last_wal_seq),
        vec!["wal_1.wal".into()],
        snap.timestamp,
    );
    fs::write(dir.join("MANIFEST"), m.to_bytes()).unwrap();
    let second_write = snap.timestamp + 20;
    (snap, second_write)
}

#[test]
fn a_legacy_point_in_time_restore_obeys_the_same_rule() {
    for snapshot in ["snapshot_v3.snap", "snapshot_v3_ann.snap"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let repo = tmp.path().join("backups");
        let (snap, t) = v3_dir_with_w3_wal(&dir, snapshot);
        create(&dir, &repo, &[]);
        let target = tmp.path().join("restored");
        let at = |extra: &[&str]| {
            kb().backup_dir(&repo)
                .data_dir(&target)
                .args([
                    "restore",
                    "--format",
                    "json",
                    "--point-in-time",
                    &t.to_string(),
                ])
                .args(extra)
                .output()
                .unwrap()
        };
        let out = if snap.distance.is_some() {
            at(&[])
        } else {
            let out = at(&[]);
            assert_eq!(
                out.status.code(),
                Some(4),
                "{snapshot}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stderr).contains("stores no distance metric"));
            assert!(!target.exists(), "{snapshot}: nothing written");
            at(&["--distance", "innerproduct"])
        };
        assert!(
            out.status.success(),
            "{snapshot}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["recovered_to"], t);
        let metric = snap.distance.unwrap_or(DistanceMetric::InnerProduct);
        assert_current(&target, metric);
        // The snapshot's documents plus the two writes at or before T.
        assert_eq!(
            state(&target).docs.len() as u64,
            snap.documents.len() as u64 + 2,
            "{snapshot}"
        );
    }
}
