//! The point-in-time rule on manifests built in memory: starts, pooling, gaps, proofs by
//! backup time, windows, `nearest`, several chains.

use kyrodb_backup_chain::{
    recoverable_windows, resolve, BackupView, Error, PitrOptions, SegmentView, SnapshotView, Window,
};

fn id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A backup of chain `chain` taken at `tb`, capturing `snapshot` `(ts, last_wal_seq)` and WAL
/// segments given as (name id, [(seq, ts)]).
fn backup(
    n: u64,
    chain: u64,
    tb: u64,
    snapshot: Option<(u64, u64)>,
    segments: &[(u64, &[(u64, u64)])],
) -> BackupView {
    BackupView {
        id: id(n),
        chain_id: id(chain),
        timestamp: tb,
        snapshot: snapshot.map(|(ts, seq)| SnapshotView {
            file: format!("snapshot_{ts}.snap"),
            timestamp: ts,
            last_wal_seq: seq,
        }),
        segments: segments
            .iter()
            .map(|(name, entries)| SegmentView {
                name: format!("wal_{name}.wal"),
                entries: entries.to_vec(),
            })
            .collect(),
    }
}

fn entries(seqs: std::ops::RangeInclusive<u64>, ts0: u64) -> Vec<(u64, u64)> {
    seqs.clone()
        .map(|s| (s, ts0 + (s - seqs.start())))
        .collect()
}

fn at(b: &[BackupView], t: u64) -> Result<kyrodb_backup_chain::PitrPlan, Error> {
    resolve(
        b,
        &PitrOptions {
            target: t,
            nearest: false,
        },
    )
}

#[test]
fn one_backup_every_second_before_it_is_exact() {
    let e = entries(1..=10, 100); // seq s at second 99 + s
    let b = vec![backup(1, 1, 200, None, &[(1, &e)])];
    assert_eq!(
        recoverable_windows(&b).unwrap(),
        [Window { from: 0, to: 199 }]
    );
    let p = at(&b, 104).unwrap();
    assert_eq!(
        (p.last_seq, p.segments[0].keep_entries, p.segments[0].whole),
        (5, 5, false)
    );
    let p = at(&b, 150).unwrap();
    assert_eq!((p.last_seq, p.segments[0].whole), (10, true));
    let p = at(&b, 50).unwrap();
    assert_eq!(
        (p.snapshot.clone(), p.last_seq, p.segments.len()),
        (None, 0, 0)
    );
    assert!(matches!(at(&b, 200), Err(Error::NotRecoverable { .. })));
}

#[test]
fn entries_of_the_same_second_go_together() {
    let e = [(1, 100), (2, 100), (3, 100), (4, 101), (5, 101), (6, 102)];
    let b = vec![backup(1, 1, 200, None, &[(1, &e)])];
    assert_eq!(at(&b, 100).unwrap().last_seq, 3);
    assert_eq!(at(&b, 101).unwrap().last_seq, 5);
}

#[test]
fn a_snapshot_starts_the_rebuild_when_early_wal_is_gone() {
    let e = entries(4..=10, 103);
    let b = vec![backup(1, 1, 200, Some((105, 5)), &[(1, &e)])];
    assert!(at(&b, 104).is_err(), "entry 1 was never captured");
    let p = at(&b, 108).unwrap();
    assert_eq!(p.start_seq, 5);
    assert!(p.snapshot.is_some());
    assert_eq!(p.last_seq, 9, "seq s was written at second 99 + s");
    assert_eq!(p.segments[0].keep_entries, 6, "frames 4..=9 of the segment");
    assert_eq!(
        recoverable_windows(&b).unwrap(),
        [Window { from: 105, to: 199 }]
    );
}

#[test]
fn compaction_between_backups_leaves_a_gap_that_is_named() {
    // B1 (taken 120) captured 1..=10 at 100..=109. The engine then wrote 11..=20 at 130..=139,
    // snapshotted at 140 (last_wal_seq 20) and deleted those segments. B2 (taken 160) captured
    // the snapshot and 21..=25 at 150..=154.
    let b = vec![
        backup(1, 1, 120, None, &[(1, &entries(1..=10, 100))]),
        backup(2, 1, 160, Some((140, 20)), &[(3, &entries(21..=25, 150))]),
    ];
    assert_eq!(
        recoverable_windows(&b).unwrap(),
        [Window { from: 0, to: 119 }, Window { from: 140, to: 159 }]
    );
    assert_eq!(at(&b, 119).unwrap().last_seq, 10);
    assert!(at(&b, 130).is_err());
    let p = at(&b, 152).unwrap();
    assert_eq!((p.start_seq, p.last_seq), (20, 23));
    let near = resolve(
        &b,
        &PitrOptions {
            target: 130,
            nearest: true,
        },
    )
    .unwrap();
    assert_eq!(near.recovered_to, 119);
    let near = resolve(
        &b,
        &PitrOptions {
            target: 10_000,
            nearest: true,
        },
    )
    .unwrap();
    assert_eq!(near.recovered_to, 159);
    let err = at(&b, 130).unwrap_err().to_string();
    assert!(
        err.contains("0..=119") && err.contains("140..=159"),
        "{err}"
    );
}

#[test]
fn a_segment_that_grew_is_read_from_its_longest_capture() {
    let b = vec![
        backup(1, 1, 110, None, &[(1, &entries(1..=5, 100))]),
        backup(2, 1, 120, None, &[(1, &entries(1..=9, 100))]),
    ];
    let p = at(&b, 107).unwrap();
    assert_eq!(p.segments[0].file.backup_id, id(2));
    assert_eq!(p.last_seq, 8);
}

#[test]
fn the_chain_with_the_newest_start_wins() {
    let b = vec![
        backup(1, 1, 300, None, &[(1, &entries(1..=50, 100))]),
        backup(2, 2, 300, Some((140, 40)), &[(7, &entries(41..=50, 140))]),
    ];
    let p = at(&b, 145).unwrap();
    assert_eq!(p.chain_id, id(2));
    assert_eq!(p.start_seq, 40);
    // Before chain 2's snapshot only chain 1 can rebuild.
    assert_eq!(at(&b, 120).unwrap().chain_id, id(1));
}

#[test]
fn legacy_entries_and_no_backups_are_explained() {
    let b = vec![backup(1, 1, 200, None, &[(1, &[(0, 100), (0, 101)])])];
    assert!(matches!(at(&b, 150), Err(Error::LegacyWal { .. })));
    assert!(matches!(at(&[], 150), Err(Error::NoBackups)));
}

/// A deterministic generator of histories: the resolution agrees with its own windows.
#[test]
fn windows_and_resolution_agree_on_generated_histories() {
    let mut state = 99u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for round in 0..300 {
        let mut backups = Vec::new();
        let mut seq = 0;
        let mut ts = 100;
        let mut snap: Option<(u64, u64)> = None;
        for n in 1..=(1 + next(5)) {
            let start = seq + 1;
            let count = next(6);
            let mut es = Vec::new();
            for _ in 0..count {
                seq += 1;
                ts += next(3);
                es.push((seq, ts));
            }
            if next(3) == 0 {
                ts += 1;
                snap = Some((ts, seq));
            }
            // Sometimes the capture lost its first entries (compaction before this backup).
            let keep_from = if next(4) == 0 {
                (start + next(3)).min(seq + 1)
            } else {
                1
            };
            let captured: Vec<(u64, u64)> = backups_entries(&es, keep_from);
            ts += 1 + next(3);
            backups.push(backup(n, 1, ts, snap, &[(n, &captured)]));
            ts += next(2);
        }
        let windows = recoverable_windows(&backups).unwrap();
        let last = backups.iter().map(|b| b.timestamp).max().unwrap() + 3;
        for t in 0..=last {
            let inside = windows.iter().any(|w| w.from <= t && t <= w.to);
            match at(&backups, t) {
                Ok(p) => assert!(inside && p.recovered_to == t, "round {round} t {t}"),
                Err(_) => assert!(!inside, "round {round} t {t}: window says exact"),
            }
            if let Ok(p) = resolve(
                &backups,
                &PitrOptions {
                    target: t,
                    nearest: true,
                },
            ) {
                assert!(p.recovered_to <= t);
                assert!(windows
                    .iter()
                    .any(|w| w.from <= p.recovered_to && p.recovered_to <= w.to));
            }
        }
    }
}

fn backups_entries(es: &[(u64, u64)], keep_from: u64) -> Vec<(u64, u64)> {
    es.iter().copied().filter(|e| e.0 >= keep_from).collect()
}
