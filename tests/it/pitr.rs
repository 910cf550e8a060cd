//! Point-in-time restore on the engine's fixtures: for every second of each `ops.jsonl` timeline
//! (and before and after it), `restore --point-in-time T` either rebuilds exactly the replay of
//! the writes with `ts <= T`, or exits 4 without writing anything, as the rule decides.

use crate::support::*;
use predicates::prelude::*;

fn restore_at(
    repo: &std::path::Path,
    target: &std::path::Path,
    t: &str,
    extra: &[&str],
) -> std::process::Output {
    kb().backup_dir(repo)
        .data_dir(target)
        .args(["restore", "--format", "json", "--point-in-time", t])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn every_second_of_every_fixture_timeline_is_rebuilt_exactly_or_refused() {
    for fixture in ["v4-basic", "v4-rotated", "v4-wal-only"] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let repo = tmp.path().join("backups");
        copy_fixture_data(fixture, &data);
        let b = create(&data, &repo, &[]);
        // The rule, for one backup taken now (after every write of the fixture): a second is
        // exact when the rebuild can start from it — the empty state if WAL entry 1 was
        // captured, else the snapshot once T reaches its timestamp.
        let from_empty = b["wal"]["first_seq"] == 1;
        let snap_ts = b["snapshot"]["timestamp"].as_u64();
        let (lo, hi) = ops_time_range(fixture);
        let mut exact = 0;
        let mut refused = 0;
        for t in lo - 3..=hi + 3 {
            let target = tmp.path().join(format!("at-{t}"));
            let out = restore_at(&repo, &target, &t.to_string(), &[]);
            let expect_exact = from_empty || snap_ts.is_some_and(|s| t >= s);
            if expect_exact {
                assert!(
                    out.status.success(),
                    "{fixture} T={t}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(r["recovered_to"], t);
                assert_eq!(r["point_in_time"], t);
                assert_eq!(
                    recovered_as_expected_json(&target),
                    ops_state_at(fixture, t),
                    "{fixture} T={t}"
                );
                assert_eq!(r["vector_count"], ops_state_at(fixture, t)["count"]);
                exact += 1;
            } else {
                assert_eq!(out.status.code(), Some(4), "{fixture} T={t}");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains("not exactly recoverable"), "{err}");
                assert!(err.contains("recoverable windows"), "{err}");
                assert!(err.contains("hint: add --nearest"), "{err}");
                assert!(!target.exists(), "{fixture} T={t}: nothing written");
                refused += 1;
            }
        }
        assert!(exact > 0, "{fixture}");
        if fixture == "v4-rotated" {
            assert!(
                refused > 0,
                "compacted history before the snapshot cannot be rebuilt"
            );
        }
    }
}

#[test]
fn after_the_last_backup_is_refused_and_nearest_restores_the_second_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-basic", &data);
    let b = create(&data, &repo, &[]);
    let tb = b["timestamp"].as_u64().unwrap();
    let later = (tb + 3600).to_string();
    let target = tmp.path().join("restored");
    let out = restore_at(&repo, &target, &later, &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(!target.exists());
    let out = restore_at(&repo, &target, &later, &["--nearest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["recovered_to"],
        tb - 1,
        "the last second the backup proves complete"
    );
    assert_eq!(
        recovered_as_expected_json(&target),
        expected_json("v4-basic")
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nearest earlier second"));
}

#[test]
fn rfc3339_times_and_the_empty_state_before_any_write() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-wal-only", &data);
    create(&data, &repo, &[]);
    let target = tmp.path().join("restored");
    let out = restore_at(&repo, &target, "2020-01-01T00:00:00Z", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["recovered_to"], 1_577_836_800);
    assert_eq!(r["vector_count"], 0);
    assert_eq!(recovered_as_expected_json(&target)["count"], 0);
    kb().args(["restore", "--point-in-time", "yesterday"])
        .assert()
        .code(2);
    kb().args(["restore", "--backup-id", "x", "--point-in-time", "1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[test]
fn nearest_with_nothing_recoverable_before_t_names_the_earliest_second_instead() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-rotated", &data);
    let b = create(&data, &repo, &[]);
    // This fixture's rebuilds start at its snapshot: nothing before it is recoverable.
    let snap = b["snapshot"]["timestamp"].as_u64().unwrap();
    let target = tmp.path().join("restored");
    let out = restore_at(&repo, &target, &(snap - 5).to_string(), &["--nearest"]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("add --nearest"), "{err}");
    assert!(
        err.contains(&format!(
            "hint: nothing is recoverable before {}; the earliest recoverable second after it is {snap}",
            snap - 5
        )),
        "{err}"
    );
    assert!(!target.exists());
    // Without --nearest the hint still offers it.
    let out = restore_at(&repo, &target, &(snap - 5).to_string(), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --nearest"));
}
