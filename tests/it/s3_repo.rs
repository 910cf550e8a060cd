//! Repositories in a bucket of a real S3-compatible server (moto, on 127.0.0.1): every command,
//! `copy` between local and S3 repositories, damage, concurrent runs, credentials that cannot
//! delete, and the server failing under the tool (through the fault proxy).

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;

use crate::support::engine::Engine;
use crate::support::proxy::Proxy;
use crate::support::s3::S3Server;
use crate::support::*;

/// A moto server with one bucket, and the binary pointed at it.
struct Bucket {
    server: S3Server,
    name: String,
    tmp: tempfile::TempDir,
}

impl Bucket {
    fn new() -> Self {
        let server = S3Server::start();
        server.create_bucket("backups");
        Self {
            server,
            name: "backups".into(),
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    /// The URL of a repository under `prefix`.
    fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.name)
    }

    /// The binary, with the server's endpoint and credentials (or those of `endpoint`).
    fn kb_via(&self, endpoint: &str) -> Command {
        let mut c = kb();
        c.env_remove("AWS_PROFILE")
            .env("HOME", self.tmp.path())
            .envs(self.server.env())
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("KYRODB_BACKUP_S3_RETRY_SECS", "3");
        c
    }

    fn kb(&self) -> Command {
        self.kb_via(&self.server.endpoint())
    }

    /// The binary as a process to spawn (and kill), through `endpoint`.
    fn process_via(&self, endpoint: &str) -> std::process::Command {
        let mut c = kb_process();
        c.env_remove("AWS_PROFILE")
            .env("HOME", self.tmp.path())
            .envs(self.server.env())
            .env("AWS_ENDPOINT_URL", endpoint);
        c
    }

    /// `list --format json` of a repository.
    fn list(&self, repo: &str) -> serde_json::Value {
        json(
            &self
                .kb()
                .backup_dir(repo)
                .args(["list", "--format", "json"])
                .output()
                .unwrap(),
        )
    }

    /// `verify --all` of a repository passes.
    fn verify_ok(&self, repo: &str) {
        self.kb()
            .backup_dir(repo)
            .args(["verify", "--all"])
            .assert()
            .success();
    }

    /// The keys of the repository under `prefix`, with sizes.
    fn keys(&self, prefix: &str) -> Vec<(String, u64)> {
        self.server
            .list_keys(&self.name, &format!("{prefix}/"))
            .into_iter()
            .map(|(k, s)| (k[prefix.len() + 1..].to_string(), s))
            .collect()
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn create_in(cmd: &mut Command, data: &Path, repo: &str, extra: &[&str]) -> serde_json::Value {
    json(
        &cmd.data_dir(data)
            .backup_dir(repo)
            .args(["create", "--format", "json"])
            .args(extra)
            .output()
            .unwrap(),
    )
}

/// A data dir the engine-protocol writer wrote: a snapshot, then more writes in a rotated
/// segment; returns the engine (to write more) and the second the first phase ended.
fn engine_dir(dir: &Path) -> Engine {
    let mut e = Engine::open(dir, 8);
    for i in 0..200 {
        e.insert(i, i);
    }
    e.snapshot();
    for i in 200..260 {
        e.insert(i, i * 3);
    }
    e.rotate();
    for i in 0..20 {
        e.update(i, "x");
    }
    e
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, command after command
fn every_command_works_on_a_bucket_and_the_objects_are_the_local_layout() {
    let b = Bucket::new();
    let data = b.tmp.path().join("data");
    let mut engine = engine_dir(&data);
    let repo = b.url("prod/kyrodb");
    // A dry run writes nothing, not even the repository's marker.
    let dry = create_in(&mut b.kb(), &data, &repo, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(b.keys("prod/kyrodb").is_empty());
    let full = create_in(&mut b.kb(), &data, &repo, &["--description", "nightly"]);
    assert_eq!(full["backup_type"], "Full");
    for i in 300..320 {
        engine.insert(i, i);
    }
    // The backup is taken in a later second than the last write, so that second is whole.
    std::thread::sleep(Duration::from_millis(1100));
    let inc = create_in(
        &mut b.kb(),
        &data,
        &repo,
        &["--incremental", "--reference", "latest"],
    );
    assert_eq!(inc["parent_id"], full["id"]);
    let state_at_inc = consistent_state_files(&data);

    // The bucket holds exactly the local layout: marker, manifests, chunks (and no lease left).
    let keys = b.keys("prod/kyrodb");
    assert!(keys.iter().any(|(k, _)| k == "kyrodb-backup.json"));
    let chain = full["id"].as_str().unwrap();
    for id in [chain, inc["id"].as_str().unwrap()] {
        assert!(
            keys.iter()
                .any(|(k, _)| *k == format!("chains/{chain}/manifests/{id}.manifest")),
            "{keys:?}"
        );
    }
    assert!(
        keys.iter().all(|(k, _)| !k.starts_with("locks/")),
        "{keys:?}"
    );
    assert!(keys
        .iter()
        .any(|(k, _)| k.starts_with(&format!("chains/{chain}/chunks/"))));

    let list = b.list(&repo);
    assert_eq!(list.as_array().unwrap().len(), 2);
    b.kb()
        .backup_dir(&repo)
        .args(["show", &inc["id"].as_str().unwrap()[..8]])
        .assert()
        .success()
        .stdout(predicate::str::contains("Incremental"));
    let v = json(
        &b.kb()
            .backup_dir(&repo)
            .args(["verify", "--all", "--format", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(v["ok"], true, "{v}");

    // Restore by id (dry run first: nothing written), then to a second.
    let target = b.tmp.path().join("restored");
    b.kb()
        .backup_dir(&repo)
        .data_dir(&target)
        .args([
            "restore",
            "--dry-run",
            "--backup-id",
            inc["id"].as_str().unwrap(),
        ])
        .assert()
        .success();
    assert!(!target.exists());
    b.kb()
        .backup_dir(&repo)
        .data_dir(&target)
        .args(["restore", "--backup-id", inc["id"].as_str().unwrap()])
        .assert()
        .success();
    assert_eq!(tree(&target), state_at_inc);
    let at = inc["wal"]["last_timestamp"].as_u64().unwrap();
    let pit = b.tmp.path().join("pit");
    let r = json(
        &b.kb()
            .backup_dir(&repo)
            .data_dir(&pit)
            .args([
                "restore",
                "--format",
                "json",
                "--point-in-time",
                &at.to_string(),
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(r["recovered_to"], at);
    assert_eq!(
        recovered_as_expected_json(&pit),
        recovered_as_expected_json(&target)
    );

    b.kb()
        .backup_dir(&repo)
        .args(["check", "--max-age", "1h"])
        .assert()
        .success();
    // A second full, then a prune that keeps only the newest: the first chain goes whole.
    let second = create_in(&mut b.kb(), &data, &repo, &[]);
    let p = json(
        &b.kb()
            .backup_dir(&repo)
            .args(PRUNE_ALL_BUT_NEWEST)
            .args(["--format", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(p["chains_removed"], serde_json::json!([chain]), "{p}");
    let keys = b.keys("prod/kyrodb");
    assert!(keys.iter().all(|(k, _)| !k.contains(chain)), "{keys:?}");
    let second_id = second["id"].as_str().unwrap();
    assert!(keys.iter().any(|(k, _)| k.contains(second_id)));
}

#[test]
fn copy_round_trips_local_to_s3_to_local_and_every_backup_restores_byte_identically() {
    let b = Bucket::new();
    let data = b.tmp.path().join("data");
    let mut engine = engine_dir(&data);
    let local = b.tmp.path().join("local");
    let mut states = Vec::new();
    let full = create(&data, &local, &[]);
    states.push((
        full["id"].as_str().unwrap().to_string(),
        consistent_state_files(&data),
    ));
    for round in 0..2 {
        for i in 0..15 {
            engine.insert(1000 + round * 100 + i, i);
        }
        let inc = create(&data, &local, &["--incremental", "--reference", "latest"]);
        states.push((
            inc["id"].as_str().unwrap().to_string(),
            consistent_state_files(&data),
        ));
    }
    let off_site = b.url("dr");
    let back = b.tmp.path().join("back");
    let first = json(
        &b.kb()
            .args(["copy", "--format", "json", "--all", "--from"])
            .arg(&local)
            .args(["--to", &off_site])
            .output()
            .unwrap(),
    );
    assert_eq!(first["backups"].as_array().unwrap().len(), 3, "{first}");
    assert!(first["chunks_copied"].as_u64().unwrap() > 0);
    // The same copy again has nothing to do.
    let again = json(
        &b.kb()
            .args(["copy", "--format", "json", "--all", "--from"])
            .arg(&local)
            .args(["--to", &off_site])
            .output()
            .unwrap(),
    );
    assert_eq!(again["chunks_copied"], 0);
    assert!(again["backups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["status"] == "present"));
    // Back from the bucket into a new local repository: asking for the newest incremental
    // brings its whole chain, in order.
    let newest = &states.last().unwrap().0;
    let r = json(
        &b.kb()
            .args(["copy", "--format", "json", "--from", &off_site, "--to"])
            .arg(&back)
            .arg(&newest[..8])
            .output()
            .unwrap(),
    );
    let order: Vec<&str> = r["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        states.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>()
    );
    kb().backup_dir(&back)
        .args(["verify", "--all"])
        .assert()
        .success();
    // Same files, byte for byte, as the original repository's.
    assert_eq!(tree(&back), tree(&local));
    for (id, state) in &states {
        for (repo, name) in [(&off_site, "s3"), (&back.display().to_string(), "back")] {
            let target = b.tmp.path().join(format!("r-{name}-{id}"));
            b.kb()
                .backup_dir(repo)
                .data_dir(&target)
                .args(["restore", "--backup-id", id])
                .assert()
                .success();
            assert_eq!(&tree(&target), state, "{name} {id}");
        }
    }
}

#[test]
fn a_damaged_object_fails_verify_and_restore_touches_nothing() {
    let b = Bucket::new();
    let data = b.tmp.path().join("data");
    engine_dir(&data);
    let repo = b.url("r");
    let full = create_in(&mut b.kb(), &data, &repo, &[]);
    let chain = full["id"].as_str().unwrap();
    let chunk = b
        .keys("r")
        .into_iter()
        .find(|(k, _)| k.contains("/chunks/"))
        .unwrap()
        .0;
    let key = format!("r/{chunk}");
    let mut bytes = b.server.get(&b.name, &key).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    b.server.put(&b.name, &key, &bytes);
    b.kb()
        .backup_dir(&repo)
        .args(["verify", "--all"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains(chunk.rsplit('/').next().unwrap()));
    let target = b.tmp.path().join("target");
    b.kb()
        .backup_dir(&repo)
        .data_dir(&target)
        .args(["restore", "--backup-id", chain])
        .assert()
        .code(3);
    assert!(!target.exists());
    // A truncated manifest is damage too, named by its URL.
    let m = format!("r/chains/{chain}/manifests/{chain}.manifest");
    let bytes = b.server.get(&b.name, &m).unwrap();
    b.server.put(&b.name, &m, &bytes[..bytes.len() / 2]);
    b.kb()
        .backup_dir(&repo)
        .args(["verify", "--all"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains(format!("s3://backups/{m}")));
}

#[test]
fn creates_and_verifies_run_side_by_side_on_s3_and_on_disk() {
    let b = Bucket::new();
    let data = b.tmp.path().join("data");
    engine_dir(&data);
    let local = b.tmp.path().join("local").display().to_string();
    for repo in [b.url("side"), local] {
        create_in(&mut b.kb(), &data, &repo, &[]);
        let spawn = |args: &[&str]| {
            let mut c = b.process_via(&b.server.endpoint());
            c.args(["--data-dir"])
                .arg(&data)
                .args(["--backup-dir", &repo])
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        };
        // Two fulls, an incremental and two verifies, all at once: every one succeeds.
        let runs = [
            spawn(&["create"]),
            spawn(&["create"]),
            spawn(&["create", "--incremental", "--reference", "latest"]),
            spawn(&["verify", "--all"]),
            spawn(&["verify", "--all"]),
        ];
        for r in runs {
            let out = r.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{repo}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let list = b.list(&repo);
        assert_eq!(list.as_array().unwrap().len(), 4, "{repo}");
        b.verify_ok(&repo);
    }
}

#[test]
fn credentials_that_cannot_delete_create_and_read_but_prune_fails_clearly() {
    let b = Bucket::new();
    let proxy = Proxy::start(b.server.port());
    proxy.deny_deletes(true);
    let data = b.tmp.path().join("data");
    engine_dir(&data);
    let repo = b.url("nodelete");
    let full = create_in(&mut b.kb_via(&proxy.endpoint()), &data, &repo, &[]);
    create_in(&mut b.kb_via(&proxy.endpoint()), &data, &repo, &[]);
    // (Deletes go as DELETE or as a multi-object POST ?delete; both were refused.)
    assert!(
        proxy.counts().get("POST").copied().unwrap_or(0)
            + proxy.counts().get("DELETE").copied().unwrap_or(0)
            > 0,
        "{:?}",
        proxy.counts()
    );
    // The create's lease stays behind (it may not delete it); it names a committed backup.
    assert!(b
        .keys("nodelete")
        .iter()
        .any(|(k, _)| k.starts_with("locks/create-")));
    let target = b.tmp.path().join("t");
    b.kb_via(&proxy.endpoint())
        .backup_dir(&repo)
        .data_dir(&target)
        .args(["restore", "--backup-id", full["id"].as_str().unwrap()])
        .assert()
        .success();
    b.kb_via(&proxy.endpoint())
        .backup_dir(&repo)
        .args(["verify", "--all"])
        .assert()
        .success();
    let out = b
        .kb_via(&proxy.endpoint())
        .backup_dir(&repo)
        .args(PRUNE_ALL_BUT_NEWEST)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("denied"), "{err}");
    assert!(lines[1].contains("s3:DeleteObject"), "{err}");
    // With delete allowed again, the prune finishes and removes the stale leases.
    proxy.deny_deletes(false);
    b.kb()
        .backup_dir(&repo)
        .args(PRUNE_ALL_BUT_NEWEST)
        .assert()
        .success();
    assert!(b
        .keys("nodelete")
        .iter()
        .all(|(k, _)| !k.starts_with("locks/")));
    b.verify_ok(&repo);
}

#[test]
fn server_faults_are_retried_or_reported_in_one_line() {
    let b = Bucket::new();
    let proxy = Proxy::start(b.server.port());
    let data = b.tmp.path().join("data");
    engine_dir(&data);
    let repo = b.url("faults");
    // 503 SlowDown, 500 and dropped connections, a few of each: retried, and the create
    // succeeds.
    proxy.fail_next(2, 503);
    proxy.fail_matching("PUT", "/chunks/", 2, 500);
    proxy.drop_next(1);
    let full = create_in(&mut b.kb_via(&proxy.endpoint()), &data, &repo, &[]);
    b.verify_ok(&repo);
    // A missing bucket.
    b.kb()
        .backup_dir("s3://no-such-bucket/x")
        .arg("list")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bucket does not exist"))
        .stderr(predicate::str::contains("hint:"));
    // Credentials the store refuses (every request answered 403 AccessDenied): one line
    // naming the refusal, a hint about credentials and policy, no retry storm.
    proxy.reset_counts();
    proxy.fail_next(1000, 403);
    b.kb_via(&proxy.endpoint())
        .backup_dir(&repo)
        .arg("list")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("denied"))
        .stderr(predicate::str::contains("hint: check the credentials"));
    assert!(
        proxy.counts().values().sum::<u64>() < 5,
        "{:?}",
        proxy.counts()
    );
    proxy.fail_next(0, 403);
    // The server answers 503 to everything: a bounded wait, then one line and a hint; no
    // backup appears.
    proxy.fail_next(10_000, 503);
    let t0 = std::time::Instant::now();
    let out = b
        .kb_via(&proxy.endpoint())
        .data_dir(&data)
        .backup_dir(&repo)
        .arg("create")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.contains("hint:"), "{err}");
    proxy.fail_next(0, 503);
    // The server gone: the same.
    proxy.stop();
    let target = b.tmp.path().join("t");
    let out = b
        .kb_via(&proxy.endpoint())
        .backup_dir(&repo)
        .data_dir(&target)
        .args(["restore", "--backup-id", full["id"].as_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists());
    let list = b.list(&repo);
    assert_eq!(list.as_array().unwrap().len(), 1);
}

/// Creates (fulls and incrementals) and prunes that delete everything but the newest backup,
/// started together with random offsets, round after round, on a bucket and on a disk. A prune
/// never deletes a chunk that a create which started before it references: after every round
/// every listed backup verifies, and every create either committed a backup that verifies or
/// failed cleanly because its reference was pruned first.
#[test]
fn prunes_racing_creates_never_lose_a_chunk_a_backup_needs() {
    use kyrodb_backup_ops::types::RetentionPolicy;
    use kyrodb_backup_ops::{
        create, list, prune, verify, CreateOptions, NoProgress, Now, PruneOptions, Reference,
        VerifyOptions,
    };
    let b = Bucket::new();
    let data = b.tmp.path().join("data");
    let mut engine = engine_dir(&data);
    for i in 0..2000 {
        engine.insert(10_000 + i, i);
    }
    let mut s3 = kyrodb_backup_ops::S3Config::new("backups", "race");
    s3.endpoint = Some(b.server.endpoint());
    s3.access_key_id = Some("testing".into());
    s3.secret_access_key = Some("testing".into());
    let repos = [
        kyrodb_backup_ops::Location::S3(s3),
        kyrodb_backup_ops::Location::local(b.tmp.path().join("local")),
    ];
    let policy = RetentionPolicy {
        keep_hourly: 0,
        keep_daily: 0,
        keep_weekly: 0,
        keep_monthly: 0,
        min_age_days: 0,
        keep_within_secs: 0,
    };
    let now = || Now::from_system_time(std::time::SystemTime::now());
    let mut rng = Rng::new(20_261_129);
    let (mut committed, mut parent_gone, mut prunes) = (0, 0, 0);
    // How often a prune met a running create (and left its chain), and deleted something.
    let (mut met_a_create, mut deleted) = (0, 0);
    for repo in &repos {
        create(repo, &CreateOptions::new(data.clone()), now(), &NoProgress).unwrap();
        for round in 0..12 {
            let delays: Vec<u64> = (0..3).map(|_| rng.below(40)).collect();
            let incremental = round % 3 != 0;
            let data = &data;
            let policy = &policy;
            let results = std::thread::scope(|s| {
                let create_runs: Vec<_> = (0..2)
                    .map(|k| {
                        let d = delays[k];
                        s.spawn(move || {
                            std::thread::sleep(Duration::from_millis(d));
                            let mut opts = CreateOptions::new(data);
                            if incremental {
                                opts.reference = Some(Reference::Latest);
                            }
                            create(repo, &opts, now(), &NoProgress)
                        })
                    })
                    .collect();
                let d = delays[2];
                let prune_run = s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(d));
                    prune(repo, &PruneOptions::new(*policy), now())
                });
                // A verify beside them: a backup pruned under it is left out, never damage.
                let verify_run = s.spawn(move || verify(repo, &VerifyOptions::all(), &NoProgress));
                let create_results: Vec<_> =
                    create_runs.into_iter().map(|h| h.join().unwrap()).collect();
                let v = verify_run.join().unwrap().unwrap();
                assert!(v.ok, "{repo:?} round {round}: verify beside prune: {v:?}");
                (create_results, prune_run.join().unwrap())
            });
            let (create_results, prune_result) = results;
            match prune_result {
                Ok(p) => {
                    prunes += 1;
                    met_a_create += p
                        .chains_not_collected
                        .iter()
                        .filter(|c| c.reason.contains("create is writing"))
                        .count();
                    deleted += p.pruned.len();
                }
                // Two prunes never run at once here; nothing else may fail.
                Err(e) => panic!("{repo:?} round {round}: prune failed: {e}"),
            }
            for c in create_results {
                match c {
                    Ok(_) => committed += 1,
                    Err(kyrodb_backup_ops::Error::Other(m)) if m.contains("was pruned") => {
                        parent_gone += 1;
                    }
                    Err(e) => panic!("{repo:?} round {round}: create failed: {e}"),
                }
            }
            let v = verify(repo, &VerifyOptions::all(), &NoProgress).unwrap();
            assert!(v.ok, "{repo:?} round {round}: {v:?}");
            assert!(!list(repo).unwrap().backups.is_empty());
        }
    }
    assert_eq!(prunes, 24);
    // The rounds did interleave: prunes ran beside creates, and prunes deleted backups.
    assert!(met_a_create > 0 && deleted > 0, "{met_a_create} {deleted}");
    assert!(
        committed >= 24,
        "{committed} committed, {parent_gone} found their reference pruned"
    );
}

/// The server goes away in the middle of a create, a restore and a prune (the proxy in front
/// of it stops while requests are held): each fails with one line and a hint, leaves no
/// backup, no half-written target and no lost backup, and the next run finishes the job.
#[test]
fn the_server_stopping_mid_create_mid_restore_and_mid_prune_loses_nothing() {
    let b = Bucket::new();
    let data = b.tmp.path().join("data");
    // About 8 MB: a dozen chunks or more, so a command makes many requests.
    let mut engine = Engine::open(&data, 256);
    for i in 0..8000 {
        engine.insert(i, i);
    }
    engine.rotate();
    let repo = b.url("midway");
    let first = create_in(&mut b.kb(), &data, &repo, &[]);
    let run_until_stopped = |args: &[&str], target: Option<&Path>| {
        let proxy = Proxy::start(b.server.port());
        // Every request waits a little, so the stop lands while the command is working.
        proxy.stall_next(100_000, Duration::from_millis(100));
        let mut cmd = b.process_via(&proxy.endpoint());
        cmd.env("KYRODB_BACKUP_S3_RETRY_SECS", "2")
            .arg("--data-dir")
            .arg(target.unwrap_or(&data))
            .args(["--backup-dir", &repo])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(700));
        let seen = proxy.counts().values().sum::<u64>();
        proxy.stop();
        let out = child.wait_with_output().unwrap();
        (seen, out)
    };
    // Mid-create: requests were made, then the store vanished.
    let (seen, out) = run_until_stopped(&["create"], None);
    assert!(seen > 3, "the stop landed after {seen} requests");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 2, "{err}");
    let listed = |b: &Bucket| b.list(&repo).as_array().unwrap().len();
    assert_eq!(listed(&b), 1, "the interrupted create left no backup");
    // Mid-restore: the target is not created.
    let target = b.tmp.path().join("target");
    let (seen, out) = run_until_stopped(
        &["restore", "--backup-id", first["id"].as_str().unwrap()],
        Some(&target),
    );
    assert!(seen > 3, "the stop landed after {seen} requests");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists());
    // The next create succeeds; a prune stopped midway, then a whole one: the newest backup
    // always verifies.
    create_in(&mut b.kb(), &data, &repo, &[]);
    create_in(&mut b.kb(), &data, &repo, &[]);
    let prune = PRUNE_ALL_BUT_NEWEST;
    let (seen, out) = run_until_stopped(&prune, None);
    assert!(seen > 3, "the stop landed after {seen} requests");
    assert_ne!(out.status.code(), Some(0));
    b.verify_ok(&repo);
    b.kb().backup_dir(&repo).args(prune).assert().success();
    assert_eq!(listed(&b), 1);
    b.verify_ok(&repo);
}

/// Credentials and the endpoint from a profile in `~/.aws`, as the AWS CLI takes them; a
/// profile that does not exist is one line and a hint.
#[test]
fn a_profile_in_the_aws_files_is_used_and_a_missing_one_is_named() {
    let b = Bucket::new();
    let data = b.tmp.path().join("data");
    engine_dir(&data);
    let aws = b.tmp.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[backup]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile backup]\nregion = us-east-1\nendpoint_url = {}\n",
            b.server.endpoint()
        ),
    )
    .unwrap();
    let profile = |name: &str| {
        let mut c = kb();
        c.env("HOME", b.tmp.path())
            .env("AWS_PROFILE", name)
            .env("KYRODB_BACKUP_S3_RETRY_SECS", "2");
        for (k, _) in b.server.env() {
            c.env_remove(k);
        }
        c
    };
    let repo = b.url("profiled");
    create_in(&mut profile("backup"), &data, &repo, &[]);
    profile("backup")
        .backup_dir(&repo)
        .args(["verify", "--all"])
        .assert()
        .success();
    let out = profile("nobody")
        .backup_dir(&repo)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nobody") && err.lines().count() == 2, "{err}");
}

/// After retention took the middle of a chain, `copy --all` copies what remains (the full and
/// the kept incrementals, which hold every file they restore), and each restores as before.
#[test]
fn copy_after_a_prune_took_middle_incrementals_copies_what_remains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut engine = engine_dir(&data);
    let repo = tmp.path().join("repo");
    let full = create(&data, &repo, &[]);
    let mut last = full.clone();
    for round in 0..3 {
        for i in 0..10 {
            engine.insert(5000 + round * 10 + i, i);
        }
        last = create(&data, &repo, &["--incremental", "--reference", "latest"]);
    }
    let state = consistent_state_files(&data);
    kb().backup_dir(&repo)
        .args(PRUNE_ALL_BUT_NEWEST)
        .assert()
        .success();
    let left: Vec<String> = kyrodb_backup_ops::list(&repo)
        .unwrap()
        .backups
        .iter()
        .map(|b| b.id.clone())
        .collect();
    assert_eq!(left.len(), 2, "the newest and its full are kept: {left:?}");
    let copy = tmp.path().join("copy");
    kb().args(["copy", "--all", "--from"])
        .arg(&repo)
        .arg("--to")
        .arg(&copy)
        .assert()
        .success();
    let target = tmp.path().join("restored");
    kb().backup_dir(&copy)
        .data_dir(&target)
        .args(["restore", "--backup-id", last["id"].as_str().unwrap()])
        .assert()
        .success();
    assert_eq!(tree(&target), state);
    assert!(left.contains(&full["id"].as_str().unwrap().to_string()));
}

/// A create killed (SIGKILL) while it uploads leaves no visible backup, and the next create
/// uploads only what the killed one had not.
#[test]
#[allow(clippy::too_many_lines)] // two kills, each followed by its check
fn a_create_killed_mid_upload_leaves_no_backup_and_the_next_reuses_its_chunks() {
    let b = Bucket::new();
    let data = b.tmp.path().join("data");
    let mut engine = Engine::open(&data, 256);
    for i in 0..12_000 {
        engine.insert(i, i);
    }
    engine.rotate();
    let repo = b.url("killed");
    let proxy = Proxy::start(b.server.port());
    // Slow enough that the kill lands after some chunks and before the manifest.
    proxy.stall_next(100_000, Duration::from_millis(60));
    let mut child = b
        .process_via(&proxy.endpoint())
        .arg("--data-dir")
        .arg(&data)
        .args(["--backup-dir", &repo, "create"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while b
        .keys("killed")
        .iter()
        .filter(|(k, _)| k.contains("/chunks/"))
        .count()
        < 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no chunk was uploaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    assert!(
        child.wait().unwrap().code().is_none(),
        "killed, not finished"
    );
    let keys = b.keys("killed");
    let uploaded: u64 = keys
        .iter()
        .filter(|(k, _)| k.contains("/chunks/"))
        .map(|(_, s)| s)
        .sum();
    assert!(
        keys.iter().all(|(k, _)| !k.contains("/manifests/")),
        "{keys:?}"
    );
    let list = b.list(&repo);
    assert_eq!(list, serde_json::json!([]));
    // The next create (a new chain) cannot reuse the killed one's chain, but an incremental
    // of a chain reuses what a killed incremental uploaded: check both.
    let full = create_in(&mut b.kb(), &data, &repo, &[]);
    let full_stored = full["stored_bytes"].as_u64().unwrap();
    assert!(uploaded > 0 && full_stored > 0);
    for i in 20_000..26_000 {
        engine.insert(i, i);
    }
    proxy.stall_next(100_000, Duration::from_millis(60));
    let chain = full["id"].as_str().unwrap().to_string();
    // Bytes of the chain's chunk objects.
    let chain_bytes = |b: &Bucket| -> u64 {
        b.keys("killed")
            .iter()
            .filter(|(k, _)| k.contains(&chain) && k.contains("/chunks/"))
            .map(|(_, s)| s)
            .sum()
    };
    let before = chain_bytes(&b);
    let mut child = b
        .process_via(&proxy.endpoint())
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--backup-dir",
            &repo,
            "create",
            "--incremental",
            "--reference",
            "latest",
        ])
        .spawn()
        .unwrap();
    while chain_bytes(&b) == before {
        assert!(std::time::Instant::now() < deadline + Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    assert!(
        child.wait().unwrap().code().is_none(),
        "killed, not finished"
    );
    // Requests the proxy had already taken may still reach the server (as a PUT whose client
    // died may still complete on S3): stop it, and count once the bucket is still.
    proxy.stop();
    let mut partial = chain_bytes(&b) - before;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = chain_bytes(&b) - before;
        if now == partial {
            break;
        }
        partial = now;
    }
    let inc = create_in(
        &mut b.kb(),
        &data,
        &repo,
        &["--incremental", "--reference", "latest"],
    );
    let added = chain_bytes(&b) - before;
    // What the finished incremental stored (chunks; its manifest is not counted) is what the
    // chain gained less what the killed one had uploaded: none of those chunks was sent again.
    assert!(partial > 0);
    assert_eq!(
        inc["stored_bytes"].as_u64().unwrap(),
        added - partial,
        "{inc}"
    );
    b.verify_ok(&repo);
}
