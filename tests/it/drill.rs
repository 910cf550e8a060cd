//! `drill` through the binary: a restore rehearsal into a scratch directory passes on every
//! fixture and leaves nothing behind; a backup whose bytes are all consistent but whose state
//! no longer answers its golden queries as recorded fails naming the query; damage fails; the
//! scratch directory is never inside the live data dir; drills are recorded and `check
//! --max-drill-age` watches them; golden queries are recorded by default after `config
//! --golden N`, sealed in an encrypted repository, carried by `copy`, and checked by `verify`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use kyrodb_backup_format::repo::{
    decode_manifest, encode_manifest, BackupManifest, GOLDEN_MANIFEST_VERSION,
};
use kyrodb_backup_storage::backend::Location;
use kyrodb_backup_storage::{read_golden, Repository, Unlocker};

use crate::support::engine::Engine;
use crate::support::*;

/// What a run printed, and how it ended.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", self.stdout))
    }
}

/// A fixture's data dir in a temporary directory and a backup of it with `golden` golden
/// queries: (the directory, the data dir, the repository, the backup's JSON, its id).
fn golden_backup(
    fixture: &str,
    golden: &str,
) -> (
    tempfile::TempDir,
    PathBuf,
    PathBuf,
    serde_json::Value,
    String,
) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data(fixture, &data);
    let b = create(&data, &repo, &["--golden", golden]);
    let id = b["id"].as_str().unwrap().to_string();
    (tmp, data, repo, b, id)
}

fn run(cmd: &mut Command) -> Ran {
    let out = cmd.output().unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `drill --scratch SCRATCH [extra]` of `repo` with `data` as the live data dir.
fn drill(encrypted: bool, data: &Path, repo: &Path, scratch: &Path, extra: &[&str]) -> Ran {
    run(kb_for(encrypted)
        .data_dir(data)
        .backup_dir(repo)
        .arg("drill")
        .arg("--scratch")
        .arg(scratch)
        .args(extra))
}

/// [`drill`] with `--format json`, which must end with `code`; returns the report.
fn drill_json(
    encrypted: bool,
    data: &Path,
    repo: &Path,
    scratch: &Path,
    extra: &[&str],
    code: i32,
) -> serde_json::Value {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    let r = drill(encrypted, data, repo, scratch, &args);
    assert_eq!(r.code, Some(code), "drill: {}\n{}", r.stdout, r.stderr);
    r.json()
}

/// `list --format json`: the backups, newest first.
fn list(encrypted: bool, repo: &Path) -> Vec<serde_json::Value> {
    let r = run(kb_for(encrypted)
        .backup_dir(repo)
        .args(["list", "--format", "json"]));
    assert_eq!(r.code, Some(0), "list: {}", r.stderr);
    r.json().as_array().unwrap().clone()
}

/// The listed backup `id`.
fn listed(encrypted: bool, repo: &Path, id: &str) -> serde_json::Value {
    list(encrypted, repo)
        .into_iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed"))
}

/// The drill records of the repository (paths relative to it).
fn drill_records(repo: &Path) -> Vec<String> {
    walk(&repo.join("drills"))
        .into_iter()
        .map(|p| p.strip_prefix(repo).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A scratch directory holding one sentinel file; returns its path and its contents.
fn scratch_with_sentinel(parent: &Path) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
    let scratch = parent.join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    fs::write(scratch.join("sentinel"), b"left alone").unwrap();
    let before = tree(&scratch);
    (scratch, before)
}

/// The scratch directory holds exactly what it held before (no leftover of the drill).
fn assert_scratch_as_before(scratch: &Path, before: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(&tree(scratch), before, "the scratch directory's files");
    assert_eq!(
        walk_all(scratch).len(),
        before.len() + 1,
        "no directory left in the scratch directory: {:?}",
        walk_all(scratch)
    );
}

/// A backup's manifest file (plain repository).
fn manifest_path(repo: &Path, chain: &str, id: &str) -> PathBuf {
    repo.join("chains")
        .join(chain)
        .join("manifests")
        .join(format!("{id}.manifest"))
}

fn read_manifest(repo: &Path, chain: &str, id: &str) -> BackupManifest {
    decode_manifest(&fs::read(manifest_path(repo, chain, id)).unwrap()).unwrap()
}

/// The file of a chunk of a plain repository's chain.
fn chunk_file(repo: &Path, chain: &str, hash: &kyrodb_backup_format::repo::ContentHash) -> PathBuf {
    let hex = hash.to_hex();
    repo.join("chains")
        .join(chain)
        .join("chunks")
        .join(&hex[..2])
        .join(hex)
}

/// Flips one byte in the middle of a file.
fn flip_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let i = bytes.len() / 2 + 1;
    bytes[i] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

/// A unit vector of `dim` pseudo-random components.
fn unit_vector(rng: &mut Rng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim)
        .map(|_| (rng.below(2001) as f32 - 1000.0) / 1000.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// A data dir written by the engine writer: `docs` documents of random unit vectors (dim 16,
/// cosine once snapshotted), a snapshot, then five more documents in the WAL.
fn engine_dir(dir: &Path, docs: u64, seed: u64) -> Engine {
    let mut rng = Rng::new(seed);
    let mut e = Engine::open(dir, 16);
    for id in 1..=docs {
        e.insert_embedding(id, unit_vector(&mut rng, 16));
    }
    e.snapshot();
    for id in docs + 1..=docs + 5 {
        e.insert_embedding(id, unit_vector(&mut rng, 16));
    }
    e
}

/// The time figures of a drill report are there and add up.
fn assert_phases(r: &serde_json::Value) {
    let p = &r["phases"];
    let secs = |k: &str| {
        p[k].as_f64()
            .unwrap_or_else(|| panic!("phase {k} missing: {r}"))
    };
    for k in [
        "restore_seconds",
        "check_seconds",
        "golden_seconds",
        "cleanup_seconds",
    ] {
        assert!(
            secs(k) >= 0.0 && secs(k) <= secs("total_seconds"),
            "{k}: {r}"
        );
    }
    assert!(secs("restore_seconds") > 0.0, "{r}");
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, checked at every step
fn a_drill_of_each_fixture_passes_and_leaves_nothing_behind() {
    // (fixture, golden queries a `create --golden 10` records: None when it cannot).
    for (fixture, golden) in [
        ("v4-basic", Some(10)),
        ("v4-rotated", Some(10)),
        ("v4-wal-only", None),
        ("legacy", Some(5)),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let repo = tmp.path().join("backups");
        if fixture == "legacy" {
            legacy_dir(&data, "snapshot_v2_distance.snap", "wal_v2.wal");
        } else {
            copy_fixture_data(fixture, &data);
        }
        let created = run(kb()
            .data_dir(&data)
            .backup_dir(&repo)
            .args(["create", "--golden", "10", "--format", "json"]));
        assert_eq!(created.code, Some(0), "{fixture}: {}", created.stderr);
        let b = created.json();
        let id = b["id"].as_str().unwrap().to_string();
        if let Some(n) = golden {
            assert_eq!(b["golden"]["queries"], n, "{fixture}: {b}");
            assert_eq!(b["golden"]["k"], 10, "{fixture}: {b}");
            assert_eq!(b["golden"]["searched"], b["vector_count"], "{fixture}: {b}");
        } else {
            assert!(b["golden"].is_null(), "{fixture}: {b}");
            assert!(
                created.stderr.contains(
                    "golden queries not recorded: the captured state records no distance metric"
                ),
                "{fixture}: {}",
                created.stderr
            );
        }

        let live = tree(&data);
        let (scratch, before) = scratch_with_sentinel(tmp.path());
        let r = drill(false, &data, &repo, &scratch, &["--format", "json"]);
        assert_eq!(r.code, Some(0), "{fixture}: {}\n{}", r.stdout, r.stderr);
        let r = r.json();
        assert_eq!(r["passed"], true, "{fixture}: {r}");
        assert!(r["problem"].is_null(), "{fixture}: {r}");
        assert_eq!(r["backup_id"], id.as_str());
        assert_eq!(r["vector_count"], b["vector_count"], "{fixture}: {r}");
        if fixture == "legacy" {
            // Restored as the current layout (migrated), so other bytes than captured.
            assert!(r["bytes"].as_u64().unwrap() > 0, "{fixture}: {r}");
        } else {
            assert_eq!(r["bytes"], b["size_bytes"], "{fixture}: {r}");
        }
        assert_phases(&r);
        if let Some(n) = golden {
            assert_eq!(r["golden"]["source"], "backup", "{fixture}: {r}");
            assert_eq!(r["golden"]["queries"], n, "{fixture}: {r}");
            assert_eq!(r["golden"]["k"], 10, "{fixture}: {r}");
            assert_eq!(r["golden"]["report"]["ok"], true, "{fixture}: {r}");
            assert_eq!(r["golden"]["report"]["queries"], n, "{fixture}: {r}");
            assert!(r["warnings"].as_array().unwrap().is_empty(), "{r}");
        } else {
            assert_eq!(r["golden"]["source"], "none", "{fixture}: {r}");
            assert_eq!(r["golden"]["queries"], 0, "{fixture}: {r}");
            assert!(r["golden"]["report"].is_null(), "{fixture}: {r}");
            let warnings = r["warnings"].to_string();
            assert!(
                warnings.contains("records no golden queries"),
                "{fixture}: {r}"
            );
        }
        // The drill's own directory was in the scratch directory, and is gone; nothing else
        // there, and nothing of the live data dir, changed.
        let own = PathBuf::from(r["scratch"].as_str().unwrap());
        assert_eq!(
            own.parent().unwrap(),
            scratch.canonicalize().unwrap(),
            "{fixture}"
        );
        assert!(!own.exists(), "{fixture}: {} left behind", own.display());
        assert_scratch_as_before(&scratch, &before);
        assert_eq!(tree(&data), live, "{fixture}: the live data dir changed");

        // Recorded: one object, shown by list and show.
        let records = drill_records(&repo);
        assert_eq!(records.len(), 1, "{fixture}: {records:?}");
        assert!(
            records[0].starts_with(&format!("drills/{id}/")) && records[0].contains("-passed-"),
            "{fixture}: {records:?}"
        );
        assert_eq!(
            r["recorded"].as_str().unwrap(),
            records[0].as_str(),
            "{fixture}"
        );
        let listed = listed(false, &repo, &id);
        assert_eq!(listed["last_drill"]["passed"], true, "{fixture}: {listed}");
        let ts = listed["last_drill"]["timestamp"].as_u64().unwrap();
        assert!(
            records[0].contains(&format!("/{ts:010}-")) && records[0].contains("-passed-"),
            "{fixture}: {ts} {records:?}"
        );
        let shown = run(kb().backup_dir(&repo).args(["show", &id]));
        assert_eq!(shown.code, Some(0), "{}", shown.stderr);
        assert!(
            shown
                .stdout
                .lines()
                .any(|l| l.starts_with("last drill  passed")),
            "{fixture}: {}",
            shown.stdout
        );
    }
}

#[test]
#[allow(clippy::too_many_lines, clippy::many_single_char_names)] // one scenario, checked at every step
fn a_consistent_backup_whose_vector_changed_fails_its_drill_naming_the_query() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    let mut engine = engine_dir(&data, 200, 7);
    let a = create(&data, &repo, &["--golden", "20"]);
    let a_id = a["id"].as_str().unwrap().to_string();
    assert_eq!(a["golden"]["queries"], 20, "{a}");

    // A's golden queries, read as a drill reads them.
    let stored = Repository::open(&repo).unwrap();
    let a_manifest = stored.find(&a_id).unwrap().manifest;
    let a_golden = a_manifest.golden.clone().expect("A records golden queries");
    let file = read_golden(
        &stored.chain_store(&a_manifest.chain_id).unwrap(),
        &a_golden,
    )
    .unwrap();
    assert_eq!(file.queries.len(), 20);
    let victim = file.queries[0].source_id;
    // The query is the document's own vector: it is its own nearest neighbour.
    assert_eq!(file.queries[0].ids[0], victim);

    // The document moves to the opposite direction (an insert of the same id in the WAL).
    let moved: Vec<f32> = engine.state.docs[&victim]
        .embedding
        .iter()
        .map(|x| -x)
        .collect();
    engine.insert_embedding(victim, moved);
    let b = create(&data, &repo, &["--incremental", "--reference", "latest"]);
    let b_id = b["id"].as_str().unwrap().to_string();
    assert!(b["golden"].is_null(), "{b}");
    assert_eq!(b["vector_count"], a["vector_count"]);

    // B's manifest made to record A's golden queries: every hash stays consistent.
    let mut m = read_manifest(&repo, &a_id, &b_id);
    m.golden = Some(a_golden);
    m.format_version = GOLDEN_MANIFEST_VERSION;
    fs::write(
        manifest_path(&repo, &a_id, &b_id),
        encode_manifest(&m).unwrap(),
    )
    .unwrap();
    let verified = run(kb().backup_dir(&repo).args(["verify", "--all"]));
    assert_eq!(
        verified.code,
        Some(0),
        "verify: {}\n{}",
        verified.stdout,
        verified.stderr
    );

    // The drill of B restores fine, then the golden query of the moved document differs.
    let scratch = tmp.path().join("scratch");
    let live = tree(&data);
    let r = drill_json(false, &data, &repo, &scratch, &["--backup-id", &b_id], 3);
    assert_eq!(r["passed"], false, "{r}");
    assert_eq!(r["backup_id"], b_id.as_str());
    assert_eq!(r["golden"]["source"], "backup", "{r}");
    assert_eq!(r["golden"]["queries"], 20, "{r}");
    let mismatch = &r["golden"]["report"]["first_mismatch"];
    assert_eq!(mismatch["query"], 0, "{r}");
    assert_eq!(mismatch["source_id"], victim, "{r}");
    assert_eq!(mismatch["rank"], 0, "{r}");
    assert_eq!(mismatch["expected"][0], victim, "{r}");
    assert_ne!(mismatch["found"][0], victim, "{r}");
    let problem = r["problem"].as_str().unwrap();
    assert!(
        problem.contains(&format!(
            "golden query 0 (from document {victim}) differs at rank 1"
        )),
        "{problem}"
    );
    let failed_key = r["recorded"].as_str().unwrap().to_string();
    assert!(
        failed_key.starts_with(&format!("drills/{b_id}/")) && failed_key.contains("-failed-"),
        "{failed_key}"
    );
    assert!(repo.join(&failed_key).is_file());
    assert!(
        fs::read_dir(&scratch).unwrap().next().is_none(),
        "scratch left empty"
    );
    assert_eq!(tree(&data), live);

    // The only drill failed: check alerts.
    let c = run(kb()
        .data_dir(&data)
        .backup_dir(&repo)
        .args(["check", "--max-drill-age", "1d"]));
    assert_eq!(c.code, Some(3), "{}\n{}", c.stdout, c.stderr);
    assert!(
        c.stdout.contains("none of the 1 restore drills passed"),
        "{}",
        c.stdout
    );
    let cj = run(kb().data_dir(&data).backup_dir(&repo).args([
        "check",
        "--max-drill-age",
        "1d",
        "--format",
        "json",
    ]));
    assert_eq!(cj.code, Some(3));
    let cj = cj.json();
    assert_eq!(cj["ok"], false, "{cj}");
    assert_eq!(cj["drill"]["ok"], false, "{cj}");
    assert_eq!(cj["drill"]["failed_since"], 1, "{cj}");
    assert!(cj["drill"]["backup_id"].is_null(), "{cj}");

    // In words.
    let text = drill(false, &data, &repo, &scratch, &["--backup-id", &b_id]);
    assert_eq!(text.code, Some(3), "{}\n{}", text.stdout, text.stderr);
    assert!(
        text.stdout
            .starts_with(&format!("FAILED: drill of backup {b_id}")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!(
            "MISMATCH: golden query 0 (from document {victim}) differs at rank 1"
        )),
        "{}",
        text.stdout
    );
    let listed_b = listed(false, &repo, &b_id);
    assert_eq!(listed_b["last_drill"]["passed"], false, "{listed_b}");

    // A's drill passes (its state is the one its queries were recorded on).
    let ra = drill_json(false, &data, &repo, &scratch, &["--backup-id", &a_id], 0);
    assert_eq!(ra["golden"]["report"]["ok"], true, "{ra}");
    let passed_key = ra["recorded"].as_str().unwrap().to_string();
    // Then B fails once more.
    drill_json(false, &data, &repo, &scratch, &["--backup-id", &b_id], 3);

    // Failed drills after the last one that passed are counted (keys order drills to the
    // nanosecond).
    let ts = |key: &str| -> u64 { key.rsplit('/').next().unwrap()[..10].parse().unwrap() };
    let at = |key: &str| -> String { key.rsplit('/').next().unwrap()[..20].to_string() };
    let records = drill_records(&repo);
    assert_eq!(records.len(), 4, "{records:?}");
    let failed: Vec<&String> = records.iter().filter(|k| k.contains("-failed-")).collect();
    assert_eq!(failed.len(), 3, "{records:?}");
    let since = failed.iter().filter(|k| at(k) > at(&passed_key)).count();
    assert!(since >= 1, "the failure after the pass counts");
    let cj = run(kb().data_dir(&data).backup_dir(&repo).args([
        "check",
        "--max-drill-age",
        "1d",
        "--format",
        "json",
    ]));
    assert_eq!(cj.code, Some(0), "{}\n{}", cj.stdout, cj.stderr);
    let cj = cj.json();
    assert_eq!(cj["drill"]["ok"], true, "{cj}");
    assert_eq!(cj["drill"]["backup_id"], a_id.as_str(), "{cj}");
    assert_eq!(cj["drill"]["timestamp"], ts(&passed_key), "{cj}");
    assert_eq!(cj["drill"]["failed_since"], since, "{cj}");
    let c = run(kb()
        .data_dir(&data)
        .backup_dir(&repo)
        .args(["check", "--max-drill-age", "1d"]));
    assert_eq!(c.code, Some(0), "{}", c.stderr);
    assert!(
        c.stdout.starts_with(&format!(
            "OK: the last restore drill that passed (backup {a_id}) ran"
        )),
        "{}",
        c.stdout
    );
    assert!(
        c.stdout.contains(&format!("; {since} failed since")),
        "{}",
        c.stdout
    );
}

#[test]
fn a_damaged_chunk_fails_the_drill_which_is_recorded_and_cleaned_up() {
    let (tmp, data, repo, _, id) = golden_backup("v4-rotated", "10");
    let m = read_manifest(&repo, &id, &id);
    let biggest = m.files.iter().max_by_key(|f| f.size).unwrap();
    flip_byte(&chunk_file(&repo, &id, &biggest.chunks[0].hash));

    let live = tree(&data);
    let (scratch, before) = scratch_with_sentinel(tmp.path());
    let r = drill_json(false, &data, &repo, &scratch, &[], 3);
    assert_eq!(r["passed"], false, "{r}");
    assert_eq!(r["backup_id"], id.as_str(), "{r}");
    let problem = r["problem"].as_str().unwrap();
    assert!(problem.starts_with("the restore found damage"), "{problem}");
    assert_eq!(r["golden"]["source"], "none", "no golden queries ran: {r}");
    assert!(!Path::new(r["scratch"].as_str().unwrap()).exists());
    assert_scratch_as_before(&scratch, &before);
    assert_eq!(tree(&data), live);
    let records = drill_records(&repo);
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].contains("-failed-"), "{records:?}");
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.join(&records[0])).unwrap()).unwrap();
    assert_eq!(record["passed"], false);
    assert_eq!(record["problem"].as_str(), Some(problem));
    assert_eq!(listed(false, &repo, &id)["last_drill"]["passed"], false);
}

#[test]
fn a_drill_never_restores_into_the_live_data_dir_nor_runs_on_nothing() {
    let (tmp, data, repo, _, id) = golden_backup("v4-basic", "3");
    let live = tree(&data);
    let live_entries = walk_all(&data);

    // A scratch directory inside the live data dir, existing or not: refused, nothing made.
    for inside in [data.clone(), data.join("drills"), data.join("a").join("b")] {
        let r = drill(false, &data, &repo, &inside, &[]);
        assert_eq!(r.code, Some(1), "{}: {}", inside.display(), r.stderr);
        assert!(
            r.stderr.contains("is inside the live data dir"),
            "{}",
            r.stderr
        );
        assert_eq!(tree(&data), live);
        assert_eq!(
            walk_all(&data),
            live_entries,
            "{}: something was made in the live data dir",
            inside.display()
        );
    }
    // Through a symbolic link too.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let r = drill(false, &data, &repo, &link, &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("is inside the live data dir"),
        "{}",
        r.stderr
    );
    assert_eq!(walk_all(&data), live_entries);

    // A file where the scratch directory should be.
    let file = tmp.path().join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    let r = drill(false, &data, &repo, &file, &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("a-file"), "{}", r.stderr);
    assert_eq!(fs::read(&file).unwrap(), b"not a directory");

    // No such backup.
    let (scratch, before) = scratch_with_sentinel(tmp.path());
    for missing in ["00000000-0000-4000-8000-000000000000", "nonexistent"] {
        let r = drill(false, &data, &repo, &scratch, &["--backup-id", missing]);
        assert_eq!(r.code, Some(1), "{}", r.stderr);
        assert!(r.stderr.contains("no backup matches"), "{}", r.stderr);
        assert_scratch_as_before(&scratch, &before);
    }
    assert!(
        drill_records(&repo).is_empty(),
        "{:?}",
        drill_records(&repo)
    );
    assert!(listed(false, &repo, &id)["last_drill"].is_null());
    assert_eq!(tree(&data), live);
}

#[test]
fn config_sets_the_golden_queries_create_records_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    copy_fixture_data("v4-basic", &data);

    // No repository yet.
    let r = run(kb().backup_dir(&repo).args(["config", "--golden", "7"]));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("is not a kyrodb_backup repository"),
        "{}",
        r.stderr
    );
    assert!(!repo.exists());

    // Default: none.
    let first = create(&data, &repo, &[]);
    assert!(first["golden"].is_null(), "{first}");
    let shown = run(kb().backup_dir(&repo).args(["config", "--format", "json"]));
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    assert_eq!(shown.json()["golden_queries"], 0);
    assert_eq!(shown.json()["changed"], false);

    let set = run(kb()
        .backup_dir(&repo)
        .args(["config", "--golden", "7", "--format", "json"]));
    assert_eq!(set.code, Some(0), "{}", set.stderr);
    assert_eq!(set.json()["golden_queries"], 7);
    assert_eq!(set.json()["changed"], true);
    let text = run(kb().backup_dir(&repo).arg("config"));
    assert_eq!(text.code, Some(0));
    assert!(
        text.stdout.contains("golden queries per backup 7"),
        "{}",
        text.stdout
    );
    // More than a backup can record: refused, the setting kept.
    let r = run(kb().backup_dir(&repo).args(["config", "--golden", "1001"]));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let again = run(kb().backup_dir(&repo).args(["config", "--format", "json"]));
    assert_eq!(again.json()["golden_queries"], 7);

    let by_default = create(&data, &repo, &[]);
    assert_eq!(by_default["golden"]["queries"], 7, "{by_default}");
    let none = create(&data, &repo, &["--golden", "0"]);
    assert!(none["golden"].is_null(), "{none}");
    let other_k = create(&data, &repo, &["--golden", "4", "--golden-k", "3"]);
    let id = |b: &serde_json::Value| b["id"].as_str().unwrap().to_string();
    let golden_of = |b: &serde_json::Value| listed(false, &repo, &id(b))["golden"].clone();
    assert_eq!(golden_of(&by_default)["queries"], 7);
    assert_eq!(golden_of(&by_default)["k"], 10);
    assert!(golden_of(&none).is_null());
    assert!(golden_of(&first).is_null());
    assert_eq!(golden_of(&other_k)["queries"], 4);
    assert_eq!(golden_of(&other_k)["k"], 3);

    // Each drill runs what its backup recorded.
    let scratch = tmp.path().join("scratch");
    for (b, queries, source) in [
        (&by_default, 7, "backup"),
        (&none, 0, "none"),
        (&other_k, 4, "backup"),
    ] {
        let r = drill_json(false, &data, &repo, &scratch, &["--backup-id", &id(b)], 0);
        assert_eq!(r["golden"]["queries"], queries, "{r}");
        assert_eq!(r["golden"]["source"], source, "{r}");
    }
}

/// The golden file's chunks of backup `id` of an encrypted repository.
fn encrypted_golden_chunks(repo: &Path, id: &str) -> Vec<PathBuf> {
    let stored = Repository::open_at_with(
        &Location::local(repo),
        Some(&Unlocker::passphrase(PASSPHRASE)),
    )
    .unwrap();
    let m = stored.find(id).unwrap().manifest;
    let store = stored.chain_store(&m.chain_id).unwrap();
    m.golden
        .expect("golden queries recorded")
        .chunks
        .iter()
        .map(|c| repo.join(store.chunk_key(c.hash)))
        .collect()
}

#[test]
fn golden_queries_of_an_encrypted_repository_are_sealed_and_run_by_its_drill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("enc");
    copy_fixture_data("v4-basic", &data);
    init_encrypted(&repo);
    let b = create_in(true, &data, &repo, &["--golden", "5"]);
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(b["golden"]["queries"], 5, "{b}");

    let chunks = encrypted_golden_chunks(&repo, &id);
    assert!(!chunks.is_empty());
    for c in &chunks {
        let bytes = fs::read(c).unwrap();
        assert!(
            bytes.starts_with(b"KYROSEAL"),
            "{} is not sealed",
            c.display()
        );
    }
    // No stored byte shows the golden file's JSON.
    for (name, bytes) in tree(&repo) {
        assert!(
            !bytes.windows(9).any(|w| w == b"source_id"),
            "{name} holds the golden file in the clear"
        );
    }

    let scratch = tmp.path().join("scratch");
    let r = drill_json(true, &data, &repo, &scratch, &[], 0);
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["golden"]["source"], "backup", "{r}");
    assert_eq!(r["golden"]["queries"], 5, "{r}");
    assert_eq!(r["golden"]["report"]["ok"], true, "{r}");
    // Without the passphrase, no drill.
    let r = drill(false, &data, &repo, &scratch, &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(drill_records(&repo).len(), 1);
}

#[test]
fn copies_of_golden_backups_drill_in_plain_and_encrypted_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("plain");
    let mut engine = engine_dir(&data, 120, 11);
    let full = create(&data, &repo, &["--golden", "10"]);
    let mut rng = Rng::new(99);
    for id in 300..340 {
        engine.insert_embedding(id, unit_vector(&mut rng, 16));
    }
    engine.delete(3);
    let inc = create(
        &data,
        &repo,
        &["--incremental", "--reference", "latest", "--golden", "10"],
    );
    let ids: Vec<String> = [&full, &inc]
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();

    let enc = tmp.path().join("enc");
    init_encrypted(&enc);
    let plain2 = tmp.path().join("plain2");
    for (encrypted, target) in [(true, &enc), (false, &plain2)] {
        let out = run(kb_for(encrypted)
            .args(["copy", "--all", "--from"])
            .arg(&repo)
            .arg("--to")
            .arg(target));
        assert_eq!(out.code, Some(0), "copy: {}", out.stderr);
        let scratch = tmp.path().join("scratch");
        for (id, b) in ids.iter().zip([&full, &inc]) {
            let r = drill_json(encrypted, &data, target, &scratch, &["--backup-id", id], 0);
            assert_eq!(r["passed"], true, "{r}");
            assert_eq!(r["golden"]["source"], "backup", "{r}");
            assert_eq!(r["golden"]["queries"], 10, "{r}");
            assert_eq!(r["golden"]["report"]["ok"], true, "{r}");
            assert_eq!(r["vector_count"], b["vector_count"], "{r}");
            assert_eq!(
                listed(encrypted, target, id)["golden"],
                b["golden"],
                "the copy records the same golden queries"
            );
        }
    }
}

#[test]
fn verify_and_drill_catch_a_damaged_golden_file() {
    let (tmp, data, repo, b, id) = golden_backup("v4-rotated", "10");
    let m = read_manifest(&repo, &id, &id);
    let used: BTreeSet<_> = m
        .files
        .iter()
        .flat_map(|f| f.chunks.iter().map(|c| c.hash))
        .chain(
            m.snapshot_ids
                .iter()
                .flat_map(|s| s.chunks.iter().map(|c| c.hash)),
        )
        .collect();
    let golden_only: Vec<_> = m
        .golden
        .as_ref()
        .unwrap()
        .chunks
        .iter()
        .filter(|c| !used.contains(&c.hash))
        .collect();
    assert!(
        !golden_only.is_empty(),
        "the golden file has chunks of its own"
    );
    flip_byte(&chunk_file(&repo, &id, &golden_only[0].hash));

    let v = run(kb().backup_dir(&repo).args(["verify", "--all"]));
    assert_eq!(v.code, Some(3), "{}\n{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("golden.json"), "{}", v.stdout);
    let vj = run(kb()
        .backup_dir(&repo)
        .args(["verify", "--all", "--format", "json"]));
    assert_eq!(vj.code, Some(3));
    assert!(vj.stdout.contains("\"golden.json\""), "{}", vj.stdout);

    // A restore does not need the golden file; the drill does, and fails.
    let scratch = tmp.path().join("scratch");
    let r = drill_json(false, &data, &repo, &scratch, &[], 3);
    let problem = r["problem"].as_str().unwrap();
    assert!(
        problem.starts_with("the backup's golden queries") && problem.contains("golden.json"),
        "{problem}"
    );
    assert_eq!(
        r["vector_count"], b["vector_count"],
        "the restore itself ran: {r}"
    );
    assert!(fs::read_dir(&scratch).unwrap().next().is_none());
    assert!(drill_records(&repo)[0].contains("-failed-"));
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, checked at every step
fn a_point_in_time_drill_runs_a_golden_file_and_a_damaged_one_is_recorded_as_failed() {
    let (tmp, data, repo, b, id) = golden_backup("v4-basic", "5");
    let at = b["timestamp"].as_u64().unwrap() - 1;
    let at_arg = at.to_string();
    let scratch = tmp.path().join("scratch");

    // Golden queries of a point in time come only from a golden file.
    let r = drill_json(
        false,
        &data,
        &repo,
        &scratch,
        &["--point-in-time", &at_arg],
        0,
    );
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["backup_id"], id.as_str(), "{r}");
    assert_eq!(
        (&r["point_in_time"], &r["recovered_to"]),
        (&at.into(), &at.into())
    );
    assert_eq!(r["vector_count"], b["vector_count"], "{r}");
    assert_eq!(r["golden"]["source"], "none", "{r}");
    assert!(
        r["warnings"]
            .to_string()
            .contains("only from a golden file"),
        "{r}"
    );
    let golden = tmp.path().join("golden.json");
    let made = run(kb()
        .data_dir(&data)
        .args(["golden", "create", "--queries", "6", "--k", "4", "--out"])
        .arg(&golden));
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    let golden_arg = golden.to_str().unwrap();
    let r = drill_json(
        false,
        &data,
        &repo,
        &scratch,
        &["--point-in-time", &at_arg, "--golden", golden_arg],
        0,
    );
    assert_eq!(r["golden"]["source"], "file", "{r}");
    assert_eq!(
        (&r["golden"]["queries"], &r["golden"]["k"]),
        (&6.into(), &4.into())
    );
    assert_eq!(r["golden"]["report"]["ok"], true, "{r}");
    // A file in place of the backup's own queries, too.
    let r = drill_json(false, &data, &repo, &scratch, &["--golden", golden_arg], 0);
    assert_eq!(r["golden"]["source"], "file", "{r}");
    // Not a golden file: refused before anything is restored or recorded.
    let bad = tmp.path().join("bad.json");
    fs::write(&bad, b"{\"queries\": 3}").unwrap();
    let r = drill(
        false,
        &data,
        &repo,
        &scratch,
        &["--golden", bad.to_str().unwrap()],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("is not a golden file"), "{}", r.stderr);
    assert_eq!(drill_records(&repo).len(), 3);

    // Damage: the point-in-time drill fails, and is recorded as failed like any other.
    let m = read_manifest(&repo, &id, &id);
    let biggest = m.files.iter().max_by_key(|f| f.size).unwrap();
    flip_byte(&chunk_file(&repo, &id, &biggest.chunks[0].hash));
    let r = drill(
        false,
        &data,
        &repo,
        &scratch,
        &["--point-in-time", &at_arg, "--format", "json"],
    );
    assert_eq!(r.code, Some(3), "{}\n{}", r.stdout, r.stderr);
    let r = r.json();
    assert_eq!(r["passed"], false, "{r}");
    assert!(
        r["problem"]
            .as_str()
            .unwrap()
            .starts_with("the restore found damage"),
        "{r}"
    );
    let records = drill_records(&repo);
    assert_eq!(records.len(), 4, "{records:?}");
    assert_eq!(
        records.iter().filter(|k| k.contains("-failed-")).count(),
        1,
        "{records:?}"
    );
    assert!(fs::read_dir(&scratch).unwrap().next().is_none());
}
