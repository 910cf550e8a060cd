//! `golden create` before a backup, `golden check` after the restore: passes on a faithful
//! restore, fails with exit 3 when the restored snapshot's metric or a vector in a top-k differs.

use std::fs;

use crate::support::*;
use kyrodb_backup_format::engine::{DistanceMetric, Snapshot};
use predicates::prelude::*;

fn snapshot_name(dir: &std::path::Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("MANIFEST")).unwrap()).unwrap();
    m["latest_snapshot"].as_str().unwrap().to_string()
}

#[test]
fn a_golden_file_passes_on_the_restore_and_catches_a_wrong_metric_or_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    let golden = tmp.path().join("golden.json");
    copy_fixture_data("v4-basic", &data);
    kb().data_dir(&data)
        .args(["golden", "create", "--queries", "20", "--k", "5", "--out"])
        .arg(&golden)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "20 queries, exact top-5 under cosine over 52 vectors",
        ));
    let file: serde_json::Value = serde_json::from_slice(&fs::read(&golden).unwrap()).unwrap();
    assert_eq!(file["metric"], "cosine");
    assert_eq!(file["count"], 52);
    // A query is a stored vector: its nearest neighbour is itself, at distance ~0.
    for q in file["queries"].as_array().unwrap() {
        assert_eq!(q["ids"][0], q["source_id"]);
        assert!(q["scores"][0].as_f64().unwrap() < 1e-4);
        let scores: Vec<f64> = q["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] <= w[1]),
            "ordered nearest first"
        );
    }
    let b = create(&data, &repo, &[]);
    let restored = tmp.path().join("restored");
    kb().backup_dir(&repo)
        .data_dir(&restored)
        .args(["restore", "--backup-id", b["id"].as_str().unwrap()])
        .assert()
        .success();
    kb().data_dir(&restored)
        .args(["golden", "check"])
        .arg(&golden)
        .assert()
        .success()
        .stdout(predicate::str::contains("match"));

    // The same snapshot rewritten with another metric: caught.
    let snap = restored.join(snapshot_name(&restored));
    let original = fs::read(&snap).unwrap();
    let mut s = Snapshot::read(original.as_slice()).unwrap();
    s.distance = Some(DistanceMetric::Euclidean);
    let mut bytes = Vec::new();
    s.write(&mut bytes).unwrap();
    fs::write(&snap, &bytes).unwrap();
    kb().data_dir(&restored)
        .args(["golden", "check"])
        .arg(&golden)
        .assert()
        .code(3)
        .stdout(predicate::str::contains(
            "made with cosine, the data dir uses euclidean",
        ));

    // One vector of a recorded top-k moved: caught, naming the query.
    let mut s = Snapshot::read(original.as_slice()).unwrap();
    let victim = file["queries"][0]["ids"][1].as_u64().unwrap();
    let doc = s
        .documents
        .iter_mut()
        .find(|d| d.0 == victim)
        .expect("victim is in the snapshot");
    for x in &mut doc.1 {
        *x = -*x;
    }
    let mut bytes = Vec::new();
    s.write(&mut bytes).unwrap();
    fs::write(&snap, &bytes).unwrap();
    let out = kb()
        .data_dir(&restored)
        .args(["golden", "check", "--format", "json"])
        .arg(&golden)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["report"]["ok"], false);
    assert!(r["report"]["first_mismatch"]["query"].is_u64());
}

#[test]
fn a_dir_without_a_metric_needs_distance() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_fixture_data("v4-wal-only", &data);
    let out = tmp.path().join("g.json");
    kb().data_dir(&data)
        .args(["golden", "create", "--queries", "3", "--k", "2", "--out"])
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("hint: pass --distance"));
    kb().data_dir(&data)
        .args([
            "golden",
            "create",
            "--queries",
            "3",
            "--k",
            "2",
            "--distance",
            "innerproduct",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    kb().data_dir(&data)
        .args(["golden", "check"])
        .arg(&out)
        .assert()
        .success();
}
