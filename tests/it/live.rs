//! Chains and backups of a data directory that the engine keeps writing to: appends,
//! rotations, snapshots and WAL compaction between and during backups.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::engine::{state_after, Engine};
use crate::support::*;
use kyrodb_backup_format::engine::{recover, DirSource, FullState, RecoveryOptions};

fn recovered(dir: &Path) -> (FullState, u64) {
    let mut s = FullState::default();
    let r = recover(
        &mut DirSource::new(dir),
        &mut s,
        &RecoveryOptions::default(),
    )
    .unwrap();
    let last = r.last_seq();
    (s, last)
}

fn restore(repo: &Path, target: &Path, what: &[&str]) -> std::process::Output {
    kb().backup_dir(repo)
        .data_dir(target)
        .arg("restore")
        .args(what)
        .args(["--format", "json"])
        .output()
        .unwrap()
}

fn writes(e: &mut Engine, from: u64, n: u64) {
    for i in from..from + n {
        e.insert(i, i);
        if i % 5 == 0 {
            e.update(i - 2, &format!("t{i}"));
        }
        if i % 7 == 0 {
            e.delete(i - 3);
        }
    }
}

fn pause() {
    // Backups and writes must fall in distinct seconds for the point-in-time checks.
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn a_chain_over_an_evolving_fixture_with_a_snapshot_and_compaction_between_backups() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-basic", &data);
    let mut e = Engine::open(&data, 8);

    writes(&mut e, 1000, 40);
    let s1 = e.state.to_expected_json();
    pause();
    let b1 = create(&data, &repo, &[]);

    writes(&mut e, 2000, 20);
    let p2_first_ts = e
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|x| x.doc_id == 2000)
        .unwrap()
        .timestamp;
    e.rotate();
    writes(&mut e, 2100, 20);
    pause();
    e.snapshot(); // compaction deletes every segment B1 captured and all of phase 2's
    writes(&mut e, 3000, 30);
    let s2 = e.state.to_expected_json();
    pause();
    let b2 = create(
        &data,
        &repo,
        &["--incremental", "--reference", b1["id"].as_str().unwrap()],
    );

    writes(&mut e, 4000, 25);
    e.rotate();
    writes(&mut e, 4100, 5);
    let s3 = e.state.to_expected_json();
    pause();
    let b3 = create(&data, &repo, &["--incremental", "--reference", "latest"]);
    assert_eq!(b3["parent_id"], b2["id"]);
    assert_eq!(b3["chain_id"], b1["id"]);
    assert!(b3["stored_bytes"].as_u64().unwrap() < b3["size_bytes"].as_u64().unwrap());

    // Every backup restores, by id, to the state at its capture.
    for (b, s) in [(&b1, &s1), (&b2, &s2), (&b3, &s3)] {
        let target = tmp
            .path()
            .join(format!("by-id-{}", b["id"].as_str().unwrap()));
        let out = restore(&repo, &target, &["--backup-id", b["id"].as_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(recovered(&target).0.to_expected_json(), *s);
    }

    // To the second: the last second before each backup is exact...
    for (b, s) in [(&b1, &s1), (&b2, &s2), (&b3, &s3)] {
        let t = (b["timestamp"].as_u64().unwrap() - 1).to_string();
        let target = tmp.path().join(format!("at-{t}"));
        let out = restore(&repo, &target, &["--point-in-time", &t]);
        assert!(
            out.status.success(),
            "T={t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(recovered(&target).0.to_expected_json(), *s, "T={t}");
    }
    // ...but the seconds of phase 2, whose WAL the engine compacted before any backup saw it,
    // cannot be rebuilt: refused, and --nearest falls back to the last second B1 proves.
    let t = p2_first_ts.to_string();
    let target = tmp.path().join("phase2");
    let out = restore(&repo, &target, &["--point-in-time", &t]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists());
    let out = restore(&repo, &target, &["--point-in-time", &t, "--nearest"]);
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["recovered_to"], b1["timestamp"].as_u64().unwrap() - 1);
    assert_eq!(recovered(&target).0.to_expected_json(), s1);

    // show names the gap.
    let out = kb()
        .backup_dir(&repo)
        .args(["show", "--format", "json", b3["id"].as_str().unwrap()])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let windows = v["recoverable_windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{windows:?}");
    assert_eq!(windows[0]["to"], b1["timestamp"].as_u64().unwrap() - 1);
    assert_eq!(windows[1]["to"], b3["timestamp"].as_u64().unwrap() - 1);
}

#[test]
fn a_hundred_backups_under_a_concurrent_writer_each_restore_to_a_prefix_of_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    let mut engine = Engine::open(&data, 4);
    let log = Arc::clone(&engine.log);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = Arc::clone(&stop);
    let writer = std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop_writer.load(Ordering::Relaxed) {
            i += 1;
            engine.insert(i % 500, i);
            match i % 10 {
                3 => engine.update((i * 7) % 500, "u"),
                6 => engine.delete((i * 13) % 500),
                _ => {}
            }
            if i.is_multiple_of(150) {
                engine.rotate();
            }
            if i.is_multiple_of(640) {
                engine.snapshot();
            }
            if i.is_multiple_of(8) {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        engine
    });
    let mut ids = Vec::new();
    for _ in 0..100 {
        let b = create(&data, &repo, &[]);
        ids.push(b["id"].as_str().unwrap().to_string());
    }
    stop.store(true, Ordering::Relaxed);
    let engine = writer.join().unwrap();
    let log = log.lock().unwrap().clone();
    let mut distinct = std::collections::BTreeSet::new();
    for id in &ids {
        let target = tmp.path().join(format!("r-{id}"));
        let out = restore(&repo, &target, &["--backup-id", id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (state, last) = recovered(&target);
        let want = state_after(&engine.base_state, engine.base_seq, &log, last);
        assert_eq!(
            state, want,
            "backup {id} is not the prefix of the log up to seq {last}"
        );
        distinct.insert(last);
        std::fs::remove_dir_all(&target).unwrap();
    }
    eprintln!(
        "100 backups under a writer of {} entries: {} distinct prefixes",
        log.len(),
        distinct.len()
    );
    assert!(distinct.len() > 10, "the writer ran during the backups");
}
