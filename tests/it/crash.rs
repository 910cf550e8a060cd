//! `create` and `restore` killed with SIGKILL at many instants: the repository stays readable
//! and every committed backup verifies; a data dir being restored is wholly old or wholly new;
//! the next run cleans up what the killed one left. Each test also proves that its kills
//! landed mid-work: at least one round's kill interrupted the command after it had started
//! writing and before its commit point, and at least one came after the commit point. Each runs
//! on a plain repository and on an encrypted one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;
use kyrodb_backup_format::engine::{
    write_v4_snapshot, DataDirManifest, DistanceMetric, V4SnapshotOptions, WalEntry, WalLayout,
    WalOp, WalWriter,
};

/// A data dir in the engine's format, big enough (~12 MB) that a create or restore takes a
/// while: a V4 snapshot of 20,000 vectors of dimension 128 and two WAL segments.
fn write_data_dir(dir: &Path, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    let vec_of = |i: u64| -> Vec<f32> {
        (0..128)
            .map(|j| ((i * 131 + j + seed) % 997) as f32 / 997.0)
            .collect()
    };
    let snap = "snapshot_1795000000000000.snap";
    let f = std::io::BufWriter::new(fs::File::create(dir.join(snap)).unwrap());
    let opts = V4SnapshotOptions {
        timestamp: 1_795_000_000,
        dimension: 128,
        distance: DistanceMetric::Euclidean,
        last_wal_seq: 20_000,
        count: 20_000,
    };
    write_v4_snapshot(f, &opts, |i| {
        (i + 1, vec_of(i), vec![("n".into(), i.to_string())])
    })
    .unwrap();
    let mut names = Vec::new();
    let mut seq = 20_000;
    for s in 0..2 {
        let name = format!("wal_{}.wal", 1_795_000_000_000_001_u64 + s);
        let mut w = WalWriter::new(fs::File::create(dir.join(&name)).unwrap()).unwrap();
        for _ in 0..1000 {
            seq += 1;
            let e = WalEntry {
                op: WalOp::Insert,
                doc_id: seq,
                embedding: vec_of(seq),
                metadata: vec![],
                seq_no: seq,
                timestamp: 1_795_000_001 + seq / 100,
            };
            w.append(&e, WalLayout::W3).unwrap();
        }
        names.push(name);
    }
    let m = DataDirManifest::modern(Some(snap.into()), Some(20_000), names, 1_795_000_000);
    fs::write(dir.join("MANIFEST"), m.to_bytes()).unwrap();
}

/// Kill instants after the spawn (µs), for a command whose uninterrupted run took `run_us`: by
/// default ten, from 0 to twice the run time (0, T/8, 2T/8, ..., T, 2T), so that kills land
/// before the command starts, all through its work and after it finished; with
/// `KYRODB_KILL_ROUNDS=N` (`cargo xtask crash N`), N pseudo-random ones in 0..1.25 T.
fn delays_us(run_us: u64) -> Vec<u64> {
    match std::env::var("KYRODB_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        None => std::iter::once(0)
            .chain((1..=8).map(|i| run_us * i / 8))
            .chain(std::iter::once(2 * run_us))
            .collect(),
        Some(n) => {
            let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
            (0..n).map(|_| rng.below(run_us * 5 / 4 + 1)).collect()
        }
    }
}

/// What one kill left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// The old state, and nothing of the command's work visible: killed before it began.
    Untouched,
    /// The old state, with the command's unfinished work visible beside it (staged files,
    /// chunks of a backup not listed): killed mid-work, before the commit point.
    Interrupted,
    /// The new state, the command killed after its commit point (before it exited).
    CommittedThenKilled,
    /// The new state, the command finished before the kill.
    Finished,
}

impl Outcome {
    fn committed(self) -> bool {
        matches!(self, Outcome::CommittedThenKilled | Outcome::Finished)
    }
}

/// Spawns `command`, kills it (SIGKILL) `delay_us` later and returns whether the kill landed
/// (the process died of it rather than exiting first).
fn spawn_and_kill(command: &mut std::process::Command, delay_us: u64) -> bool {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_micros(delay_us));
    let _ = child.kill();
    child.wait().unwrap().signal() == Some(9)
}

/// Runs `round` at every instant of [`delays_us`]; then, while no round was `Interrupted` or
/// none committed (the machine may be slower or faster than when the command was timed), up to
/// six more rounds at instants chosen to find the missing one. Asserts that both were seen and
/// returns how often each outcome came.
fn kill_rounds(
    what: &str,
    run_us: u64,
    mut round: impl FnMut(u64) -> Outcome,
) -> BTreeMap<Outcome, usize> {
    let mut seen: BTreeMap<Outcome, usize> = BTreeMap::new();
    for delay in delays_us(run_us) {
        *seen.entry(round(delay)).or_default() += 1;
    }
    let mut early = [run_us / 2, run_us / 4, run_us * 3 / 4, run_us / 3].into_iter();
    let mut late = [3 * run_us, 6 * run_us].into_iter();
    loop {
        let interrupted = seen.contains_key(&Outcome::Interrupted);
        let committed = seen.keys().any(|o| o.committed());
        let next = if !interrupted {
            early.next()
        } else if !committed {
            late.next()
        } else {
            break;
        };
        let Some(delay) = next else { break };
        *seen.entry(round(delay)).or_default() += 1;
    }
    eprintln!("{what} kills (uninterrupted run {run_us} us): {seen:?}");
    assert!(
        seen.contains_key(&Outcome::Interrupted),
        "{what}: no kill landed mid-work, before the commit point: {seen:?}"
    );
    assert!(
        seen.keys().any(|o| o.committed()),
        "{what}: no kill came after the commit point: {seen:?}"
    );
    seen
}

/// The binary as a plain `std::process::Command`, with the passphrase when the repository is
/// encrypted.
fn kb_process_for(encrypted: bool) -> std::process::Command {
    let mut c = kb_process();
    if encrypted {
        c.env("KYRODB_BACKUP_PASSWORD", PASSPHRASE);
    }
    c
}

/// A repository at `repo` for the test: an encrypted one (made now) or a plain one (made by
/// the first create).
fn setup_repository(repo: &Path, encrypted: bool) {
    if encrypted {
        init_encrypted(repo);
    }
}

/// How to name a test's repository in its messages.
fn kind(encrypted: bool) -> &'static str {
    if encrypted {
        " (encrypted)"
    } else {
        ""
    }
}

/// The ids the repository lists.
fn listed(repo: &Path, encrypted: bool) -> BTreeSet<String> {
    let out = kb_for(encrypted)
        .backup_dir(repo)
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn create_killed_at_any_instant_leaves_a_repository_that_verifies() {
    create_killed_at_any_instant(false);
}

#[test]
fn create_killed_at_any_instant_leaves_an_encrypted_repository_that_verifies() {
    create_killed_at_any_instant(true);
}

fn create_killed_at_any_instant(encrypted: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("backups");
    write_data_dir(&data, 1);
    setup_repository(&repo, encrypted);
    let first = create_in(encrypted, &data, &repo, &[]);
    // How long an uninterrupted create takes (the first one also sets the repository up and
    // reads a cold data dir), to spread the kills over it.
    let t0 = Instant::now();
    create_in(encrypted, &data, &repo, &[]);
    let run_us = t0.elapsed().as_micros() as u64;
    kill_rounds(&format!("create{}", kind(encrypted)), run_us, |delay| {
        let backups = listed(&repo, encrypted);
        let files: BTreeSet<PathBuf> = walk(&repo).into_iter().collect();
        let killed = spawn_and_kill(
            kb_process_for(encrypted)
                .data_dir(&data)
                .backup_dir(&repo)
                .arg("create"),
            delay,
        );
        // Whatever the kill left, every backup the repository lists verifies.
        let out = kb_for(encrypted)
            .backup_dir(&repo)
            .args(["verify", "--all", "--format", "json"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "after a kill at {delay} us: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let now = listed(&repo, encrypted);
        assert!(
            now.is_superset(&backups),
            "a kill at {delay} us lost a backup"
        );
        match (now.len() - backups.len(), killed) {
            (0, _) if walk(&repo).into_iter().any(|p| !files.contains(&p)) => Outcome::Interrupted,
            (0, _) => Outcome::Untouched,
            (1, true) => Outcome::CommittedThenKilled,
            (1, false) => Outcome::Finished,
            (n, _) => panic!("one create listed {n} new backups"),
        }
    });
    // The next create succeeds and removes temporary leftovers.
    let last = create_in(
        encrypted,
        &data,
        &repo,
        &[
            "--incremental",
            "--reference",
            first["id"].as_str().unwrap(),
        ],
    );
    assert_eq!(last["parent_id"], first["id"]);
    let leftovers: Vec<_> = walk(&repo)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".kbtmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The names in `dir` that contain `part`.
fn names_with(dir: &Path, part: &str) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(part))
        .collect()
}

#[test]
fn restore_killed_at_any_instant_leaves_the_data_dir_wholly_old_or_wholly_new() {
    restore_killed_at_any_instant(false);
}

#[test]
fn encrypted_restore_killed_at_any_instant_leaves_the_data_dir_wholly_old_or_wholly_new() {
    restore_killed_at_any_instant(true);
}

fn restore_killed_at_any_instant(encrypted: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let repo = tmp.path().join("backups");
    write_data_dir(&source, 2);
    setup_repository(&repo, encrypted);
    let b = create_in(encrypted, &source, &repo, &[]);
    let id = b["id"].as_str().unwrap();
    let new_tree = consistent_state_files(&source);
    let target = tmp.path().join("data");
    write_data_dir(&target, 3);
    let old_tree = tree(&target);
    // How long an uninterrupted restore of the same size takes, to spread the kills over it.
    let timed = tmp.path().join("timed");
    let t0 = Instant::now();
    kb_for(encrypted)
        .data_dir(&timed)
        .backup_dir(&repo)
        .args(["restore", "--backup-id", id])
        .assert()
        .success();
    let run_us = t0.elapsed().as_micros() as u64;
    fs::remove_dir_all(&timed).unwrap();
    let outcomes = kill_rounds(&format!("restore{}", kind(encrypted)), run_us, |delay| {
        let staging = names_with(tmp.path(), "kyrodb-restore");
        let killed = spawn_and_kill(
            kb_process_for(encrypted)
                .data_dir(&target)
                .backup_dir(&repo)
                .args(["restore", "--keep-previous", "--backup-id"])
                .arg(id)
                .env("BACKUP_ALLOW_CLEAR", "true"),
            delay,
        );
        let now = tree(&target);
        let outcome = if now == old_tree {
            if names_with(tmp.path(), "kyrodb-restore").is_subset(&staging) {
                Outcome::Untouched
            } else {
                Outcome::Interrupted
            }
        } else {
            assert_eq!(now, new_tree, "kill at {delay} us left a mixture");
            // Put the old contents back for the next round.
            fs::remove_dir_all(&target).unwrap();
            write_data_dir(&target, 3);
            if killed {
                Outcome::CommittedThenKilled
            } else {
                Outcome::Finished
            }
        };
        for name in names_with(tmp.path(), "data.previous-") {
            fs::remove_dir_all(tmp.path().join(name)).unwrap();
        }
        outcome
    });
    // A completed restore afterwards cleans the staging directories of the killed ones.
    kb_for(encrypted)
        .data_dir(&target)
        .backup_dir(&repo)
        .args(["restore", "--backup-id"])
        .arg(id)
        .env("BACKUP_ALLOW_CLEAR", "true")
        .assert()
        .success();
    assert_eq!(tree(&target), new_tree);
    let names = names_with(tmp.path(), "kyrodb-restore");
    assert!(
        names.is_empty(),
        "staging left behind: {names:?} (outcomes: {outcomes:?})"
    );
}
