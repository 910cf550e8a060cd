//! `drill` and `check --max-drill-age` through the library, with the clock pinned: the age of
//! the last passed drill decided at the given second, failed drills counted but never making
//! a drill fresh, the records read back; and golden queries over a sample of a state larger
//! than their budget, run again by a drill over the same sample.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use kyrodb_backup_datadir::golden::Sample;
use kyrodb_backup_format::engine::{
    recover, DataDirManifest, DirSource, DistanceMetric, FullState, RecoveryOptions, Snapshot,
    SnapshotLayout, WalEntry, WalLayout, WalOp, WalWriter,
};
use kyrodb_backup_format::repo::decode_manifest;
use kyrodb_backup_ops::{
    check, create, drill, list, CheckOptions, CreateOptions, DrillOptions, NoProgress, Now,
};
use kyrodb_backup_storage::{read_golden, Repository};

mod common;

use common::{copy_dir, fixtures};

const T: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

/// A backup of the `v4-rotated` fixture with five golden queries, taken at `T`.
fn backed_up(tmp: &Path) -> (PathBuf, PathBuf, String) {
    let data = tmp.join("data");
    copy_dir(&fixtures().join("kyrodb/v4-rotated/data"), &data);
    let backups = tmp.join("backups");
    let mut opts = CreateOptions::new(&data);
    opts.golden = Some(5);
    let r = create(&backups, &opts, Now::at(T), &NoProgress).unwrap();
    assert_eq!(r.backup.golden.map(|g| g.queries), Some(5));
    (data, backups, r.backup.id)
}

/// Flips a byte of the first chunk of the backup's largest file.
fn damage_a_chunk(backups: &Path, id: &str) {
    let m = decode_manifest(
        &fs::read(
            backups
                .join("chains")
                .join(id)
                .join("manifests")
                .join(format!("{id}.manifest")),
        )
        .unwrap(),
    )
    .unwrap();
    let hex = m.files.iter().max_by_key(|f| f.size).unwrap().chunks[0]
        .hash
        .to_hex();
    let path = backups
        .join("chains")
        .join(id)
        .join("chunks")
        .join(&hex[..2])
        .join(&hex);
    let mut bytes = fs::read(&path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0xa5;
    fs::write(&path, bytes).unwrap();
}

#[test]
#[allow(clippy::too_many_lines)] // one history of drills, checked at every step
fn the_last_passed_drill_is_fresh_until_its_age_passes_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, backups, id) = backed_up(tmp.path());
    let scratch = tmp.path().join("scratch");
    let limit = CheckOptions::max_drill_age(35 * DAY);

    // No drill yet.
    let r = check(&backups, &limit, Now::at(T + 10)).unwrap();
    assert!(!r.ok);
    let d = r.drill.unwrap();
    assert!(!d.ok);
    assert_eq!(d.max_age_seconds, 35 * DAY);
    assert_eq!((d.backup_id, d.timestamp, d.failed_since), (None, None, 0));
    assert_eq!(
        d.problem.as_deref(),
        Some("no restore drill has run on this repository")
    );

    // A drill that is not recorded changes nothing.
    let mut unrecorded = DrillOptions::new(&scratch);
    unrecorded.record = false;
    let r = drill(&backups, &unrecorded, Now::at(T + 50), &NoProgress).unwrap();
    assert!(r.passed && r.recorded.is_none());
    assert!(!check(&backups, &limit, Now::at(T + 60)).unwrap().ok);

    // A drill that passes at T0.
    let t0 = T + 100;
    let mut opts = DrillOptions::new(&scratch);
    opts.live_data_dir = Some(data.clone());
    let passed = drill(&backups, &opts, Now::at(t0), &NoProgress).unwrap();
    assert!(passed.passed, "{:?}", passed.problem);
    assert_eq!(passed.backup_id, id);
    assert_eq!(passed.golden.source, "backup");
    assert_eq!(passed.golden.queries, 5);
    assert!(passed.recorded.is_some());
    assert!(!passed.scratch.exists());
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);

    let fresh = check(&backups, &limit, Now::at(t0 + 35 * DAY)).unwrap();
    assert!(fresh.ok, "{fresh:?}");
    let d = fresh.drill.unwrap();
    assert!(d.ok && d.problem.is_none());
    assert_eq!(d.backup_id.as_deref(), Some(id.as_str()));
    assert_eq!(d.timestamp, Some(t0));
    assert_eq!(d.age_seconds, Some(35 * DAY));
    assert_eq!(d.failed_since, 0);
    let stale = check(&backups, &limit, Now::at(t0 + 35 * DAY + 1)).unwrap();
    assert!(!stale.ok);
    let d = stale.drill.unwrap();
    assert!(!d.ok);
    assert_eq!(d.age_seconds, Some(35 * DAY + 1));
    assert_eq!(
        d.problem,
        Some(format!(
            "the last restore drill that passed ran {}s ago",
            35 * DAY + 1
        ))
    );
    // The drill limit is independent of the backup age limit: both are checked.
    let mut both = CheckOptions::max_drill_age(35 * DAY);
    both.max_age = Some(10);
    let r = check(&backups, &both, Now::at(t0 + DAY)).unwrap();
    assert!(!r.ok && r.drill.unwrap().ok);

    // Drills that fail, one after the pass and one dated before it: neither makes the drills
    // fresh; only the one at or after the pass counts as failed since.
    damage_a_chunk(&backups, &id);
    let t1 = t0 + 3600;
    let failed = drill(&backups, &opts, Now::at(t1), &NoProgress).unwrap();
    assert!(!failed.passed);
    let problem = failed.problem.clone().unwrap();
    assert!(problem.starts_with("the restore found damage"), "{problem}");
    assert!(!failed.scratch.exists());
    let earlier = drill(&backups, &opts, Now::at(t0 - 50), &NoProgress).unwrap();
    assert!(!earlier.passed);
    let r = check(&backups, &limit, Now::at(t0 + 35 * DAY)).unwrap();
    let d = r.drill.unwrap();
    assert!(d.ok, "{d:?}");
    assert_eq!(d.timestamp, Some(t0));
    assert_eq!(d.failed_since, 1);
    let d = check(&backups, &limit, Now::at(t0 + 35 * DAY + 1))
        .unwrap()
        .drill
        .unwrap();
    assert!(!d.ok);
    assert_eq!(d.failed_since, 1);

    // The records, oldest first, say what happened.
    let backup = list(&backups).unwrap().backups.remove(0);
    let repo = Repository::open(&backups).unwrap();
    let keys = repo.drill_keys().unwrap();
    let seen: Vec<(u64, bool)> = keys.iter().map(|k| (k.timestamp, k.passed)).collect();
    assert_eq!(seen, [(t0 - 50, false), (t0, true), (t1, false)]);
    let records: Vec<_> = keys.iter().map(|k| repo.load_drill(k).unwrap()).collect();
    for (r, k) in records.iter().zip(&keys) {
        assert_eq!(r.backup_id, id);
        assert_eq!(r.timestamp, k.timestamp);
        assert_eq!(r.version, 1);
        assert_eq!(r.point_in_time, None);
        assert!(r.total_seconds >= r.restore_seconds);
    }
    let ok = &records[1];
    assert_eq!(ok.id, passed.drill_id);
    assert!(ok.passed && ok.problem.is_none());
    assert!(ok.restore_seconds > 0.0);
    assert!(ok.restore_mb_per_s > 0.0);
    assert_eq!(ok.bytes, backup.size_bytes);
    assert_eq!(ok.vector_count, backup.vector_count);
    assert_eq!(
        (ok.golden_queries, ok.golden_source.as_str()),
        (5, "backup")
    );
    let bad = &records[2];
    assert_eq!(bad.id, failed.drill_id);
    assert!(!bad.passed);
    assert_eq!(bad.problem.as_deref(), Some(problem.as_str()));
    assert_eq!(
        (bad.golden_queries, bad.golden_source.as_str()),
        (0, "none")
    );
}

/// A pseudo-random unit vector of dimension 16.
fn unit_vector(state: &mut u64) -> Vec<f32> {
    let v: Vec<f32> = (0..16)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            (*state % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// A data dir of 300 documents (dim 16, cosine) in a snapshot, then a WAL that deletes ten,
/// inserts five of them again with other vectors, and inserts twenty new ones.
fn sampled_dir(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let documents: Vec<(u64, Vec<f32>)> =
        (1..=300).map(|id| (id, unit_vector(&mut state))).collect();
    let snapshot = Snapshot {
        layout: SnapshotLayout::V4,
        timestamp: T - 3600,
        doc_count: documents.len() as u64,
        dimension: 16,
        metadata: documents.iter().map(|d| (d.0, Vec::new())).collect(),
        documents,
        distance: Some(DistanceMetric::Cosine),
        ann_search_mode: None,
        quantized_rerank_multiplier: None,
        last_wal_seq: 300,
    };
    let mut bytes = Vec::new();
    snapshot.write(&mut bytes).unwrap();
    fs::write(dir.join("snapshot_1799996400000000.snap"), bytes).unwrap();
    let mut wal = WalWriter::new(Vec::new()).unwrap();
    let mut seq = 300;
    let mut entry = |op, doc_id, embedding: Vec<f32>| {
        seq += 1;
        WalEntry {
            op,
            doc_id,
            embedding,
            metadata: Vec::new(),
            seq_no: seq,
            timestamp: T - 1800 + seq,
        }
    };
    let mut entries = Vec::new();
    for id in (10..=100).step_by(10) {
        entries.push(entry(WalOp::Delete, id, Vec::new()));
    }
    for id in (10..=50).step_by(10) {
        entries.push(entry(WalOp::Insert, id, unit_vector(&mut state)));
    }
    for id in 1000..1020 {
        entries.push(entry(WalOp::Insert, id, unit_vector(&mut state)));
    }
    for e in &entries {
        wal.append(e, WalLayout::W3).unwrap();
    }
    let wal_name = "wal_1799998200000000.wal".to_string();
    fs::write(dir.join(&wal_name), wal.into_inner()).unwrap();
    let manifest = DataDirManifest::modern(
        Some("snapshot_1799996400000000.snap".into()),
        Some(300),
        vec![wal_name],
        T - 1800,
    );
    fs::write(dir.join("MANIFEST"), manifest.to_bytes()).unwrap();
}

#[test]
fn golden_queries_over_a_sample_are_run_by_the_drill_over_the_same_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let backups = tmp.path().join("backups");
    sampled_dir(&data);
    let mut opts = CreateOptions::new(&data);
    opts.golden = Some(20);
    opts.golden_k = 5;
    opts.golden_budget_bytes = 4096;
    let created = create(&backups, &opts, Now::at(T), &NoProgress).unwrap();
    let b = &created.backup;
    assert_eq!(b.vector_count, 300 - 10 + 5 + 20);
    let g = b.golden.unwrap();
    assert_eq!((g.queries, g.k), (20, 5));
    // 4 KiB holds 64 vectors of 16 floats: a sample, within the budget.
    assert!(g.searched < b.vector_count, "{g:?}");
    assert!(g.searched >= 20 && g.searched * 16 * 4 <= 4096, "{g:?}");
    let listed = list(&backups).unwrap().backups.remove(0);
    assert_eq!(listed.golden, Some(g));

    // The sample is exactly the live documents whose id hash is under the recorded limit.
    let repo = Repository::open(&backups).unwrap();
    let m = repo.find(&b.id).unwrap().manifest;
    let file = read_golden(
        &repo.chain_store(&m.chain_id).unwrap(),
        m.golden.as_ref().unwrap(),
    )
    .unwrap();
    let sample = file.sample.expect("the golden file records its sample");
    assert_eq!(sample.documents, g.searched);
    assert_eq!(file.count, b.vector_count);
    let mut live = FullState::default();
    recover(
        &mut DirSource::new(&data),
        &mut live,
        &RecoveryOptions::default(),
    )
    .unwrap();
    assert_eq!(live.docs.len() as u64, b.vector_count);
    let in_sample: BTreeSet<u64> = live
        .docs
        .keys()
        .copied()
        .filter(|&id| Sample::holds(sample.seed, sample.limit, id))
        .collect();
    assert_eq!(in_sample.len() as u64, sample.documents);
    for q in &file.queries {
        assert!(
            in_sample.contains(&q.source_id),
            "query from {}",
            q.source_id
        );
        assert_eq!(q.ids.len(), 5);
        assert!(q.ids.iter().all(|id| in_sample.contains(id)), "{:?}", q.ids);
    }

    // The drill searches the same sample of the restored state: every answer matches.
    let r = drill(
        &backups,
        &DrillOptions::new(tmp.path().join("scratch")),
        Now::at(T + 60),
        &NoProgress,
    )
    .unwrap();
    assert!(r.passed, "{:?}", r.problem);
    assert_eq!(r.golden.source, "backup");
    assert_eq!((r.golden.queries, r.golden.k), (20, 5));
    let report = r.golden.report.unwrap();
    assert!(report.ok && report.first_mismatch.is_none(), "{report:?}");
    assert_eq!(report.count_differs, None);
    assert_eq!(report.queries, 20);
}
