//! `archive`: the continuous WAL archive, against a writer that follows the engine's protocol
//! (appends in two writes, rotation, snapshots with compaction, restarts), with the archiver
//! killed (SIGKILL) and restarted at random instants, on a local repository and on a bucket.
//! Afterwards every second from the first start restores exactly (compared with the writer's
//! own log), except the gaps the archiver reported, which lie inside the times it was down.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kyrodb_backup_format::engine::{recover, DirSource, FullState, RecoveryOptions, WalEntry};

use crate::support::engine::{state_after, Engine};
use crate::support::s3::S3Server;
use crate::support::*;

/// Where the repository is, and how to point the binary at it.
pub(crate) struct Repo {
    pub arg: String,
    pub env: Vec<(String, String)>,
    pub home: Option<PathBuf>,
    /// Encrypted with [`PASSPHRASE`], which every command gets ([`Repo::encrypted`]).
    pub encrypted: bool,
}

impl Repo {
    pub(crate) fn local(dir: &Path) -> Self {
        Self {
            arg: dir.display().to_string(),
            env: Vec::new(),
            home: None,
            encrypted: false,
        }
    }

    pub(crate) fn bucket(server: &S3Server, prefix: &str, home: &Path) -> Self {
        let mut env = server.env();
        env.push(("AWS_ENDPOINT_URL".into(), server.endpoint()));
        env.push(("KYRODB_BACKUP_S3_RETRY_SECS".into(), "5".into()));
        Self {
            arg: format!("s3://backups/{prefix}"),
            env,
            home: Some(home.to_path_buf()),
            encrypted: false,
        }
    }

    /// Makes the (not yet existing) repository an encrypted one, as `init --encrypt` with
    /// [`PASSPHRASE`] and [`CHEAP_KDF`] does (in the repository's own environment, which
    /// names a bucket's endpoint); every command run through it then gets the passphrase.
    pub(crate) fn encrypted(mut self) -> Self {
        self.encrypted = true;
        let out = self
            .command()
            .args(["init", "--encrypt"])
            .args(CHEAP_KDF)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init --encrypt failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self
    }

    /// The directory of a repository on disk.
    pub(crate) fn dir(&self) -> Option<&Path> {
        (!self.arg.starts_with("s3://")).then(|| Path::new(&self.arg))
    }

    /// The binary pointed at the repository (and given its passphrase when encrypted).
    fn command(&self) -> std::process::Command {
        let mut c = kb_process();
        c.env_remove("AWS_PROFILE")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--backup-dir")
            .arg(&self.arg);
        if let Some(h) = &self.home {
            c.env("HOME", h);
        }
        if self.encrypted {
            c.env("KYRODB_BACKUP_PASSWORD", PASSPHRASE);
        }
        c
    }

    pub(crate) fn process(&self, data: &Path) -> std::process::Command {
        let mut c = self.command();
        c.arg("--data-dir").arg(data);
        c
    }
}

/// A running archiver whose JSON events are collected.
pub(crate) struct Archiver {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Archiver {
    pub(crate) fn start(repo: &Repo, data: &Path, extra: &[&str]) -> Self {
        let mut child = repo
            .process(data)
            .args([
                "--format",
                "json",
                "archive",
                "--interval",
                "200ms",
                "--heartbeat",
                "1s",
                "--merge-every",
                "2s",
                "--merge-fan-in",
                "4",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                text.push_str(&line);
                text.push('\n');
                // Events are one line each; the final report is pretty-printed over several.
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    sink.lock().unwrap().push(v);
                    text.clear();
                }
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits (at most `secs`) until an event satisfies `pred`.
    pub(crate) fn wait_for(&self, secs: u64, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.lines.lock().unwrap().iter().any(&pred) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGKILL: no chance to store anything more.
    pub(crate) fn kill(mut self) -> Vec<serde_json::Value> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        self.events()
    }

    /// SIGTERM: stores what it read, exits 0.
    pub(crate) fn stop(mut self) -> Vec<serde_json::Value> {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        assert!(status.success(), "archive exits 0 on SIGTERM: {status}");
        self.events()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The engine's state at second `t` by its own log.
pub(crate) fn state_at(base: &FullState, base_seq: u64, log: &[WalEntry], t: u64) -> FullState {
    let upto = log
        .iter()
        .take_while(|e| e.timestamp <= t)
        .last()
        .map_or(base_seq, |e| e.seq_no);
    state_after(base, base_seq, log, upto)
}

/// Panics naming the first documents two states disagree on (not the whole states).
pub(crate) fn assert_same(got: &FullState, want: &FullState, what: &str) {
    if got == want {
        return;
    }
    let ids: std::collections::BTreeSet<&u64> = got.docs.keys().chain(want.docs.keys()).collect();
    let differ: Vec<String> = ids
        .into_iter()
        .filter(|id| got.docs.get(id) != want.docs.get(id))
        .take(5)
        .map(|id| {
            format!(
                "{id}: got {:?}, want {:?}",
                got.docs.get(id),
                want.docs.get(id)
            )
        })
        .collect();
    panic!(
        "{what}: {} documents restored, {} expected; first differences: {differ:?}",
        got.docs.len(),
        want.docs.len()
    );
}

pub(crate) fn recovered_state(dir: &Path) -> FullState {
    let mut state = FullState::default();
    recover(
        &mut DirSource::new(dir),
        &mut state,
        &RecoveryOptions {
            torn_tail_is_error: false,
        },
    )
    .unwrap();
    state
}

/// A writer thread over an engine: inserts, updates, deletes at about `rate` a second, rotates
/// every 40 writes, snapshots (and compacts) every `snapshot_every` writes or when asked.
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    snapshot_now: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Engine>>,
}

impl Writer {
    pub(crate) fn start(mut engine: Engine, rate: u64, snapshot_every: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let snapshot_now = Arc::new(AtomicBool::new(false));
        let (s, n) = (Arc::clone(&stop), Arc::clone(&snapshot_now));
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            let pause = Duration::from_micros(1_000_000 / rate.max(1));
            while !s.load(Ordering::Relaxed) {
                i += 1;
                engine.insert(i % 300, i);
                match i % 10 {
                    3 => engine.update((i * 7) % 300, "u"),
                    6 => engine.delete((i * 13) % 300),
                    _ => {}
                }
                if i.is_multiple_of(40) {
                    engine.rotate();
                }
                if i.is_multiple_of(snapshot_every) || n.swap(false, Ordering::Relaxed) {
                    engine.snapshot();
                }
                std::thread::sleep(pause);
            }
            engine
        });
        Self {
            stop,
            snapshot_now,
            handle: Some(handle),
        }
    }

    /// Asks for a snapshot (which compacts the segments it covers) and waits until it is done.
    pub(crate) fn compact(&self) {
        self.snapshot_now.store(true, Ordering::Relaxed);
        while self.snapshot_now.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn finish(mut self) -> Engine {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// Gaps reported in events: (from, to).
fn gaps(events: &[serde_json::Value]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter(|e| e["event"] == "gap")
        .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap()))
        .collect()
}

/// Restores second `t` into `target` with the binary; `None` when refused (exit 4).
fn restore_at(repo: &Repo, target: &Path, t: u64) -> Option<serde_json::Value> {
    let out = repo
        .process(target)
        .args([
            "restore",
            "--format",
            "json",
            "--point-in-time",
            &t.to_string(),
        ])
        .output()
        .unwrap();
    if out.status.code() == Some(4) {
        assert!(!target.exists(), "a refused restore writes nothing");
        return None;
    }
    assert!(
        out.status.success(),
        "restore {t}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// What an engine wrote: the state it started from, and its log as it grows.
pub(crate) struct History {
    base: FullState,
    base_seq: u64,
    log: crate::support::engine::Log,
}

impl History {
    pub(crate) fn of(engine: &Engine) -> Self {
        Self {
            base: engine.base_state.clone(),
            base_seq: engine.base_seq,
            log: Arc::clone(&engine.log),
        }
    }

    /// The engine's state at second `t` by its own log.
    pub(crate) fn state_at(&self, t: u64) -> FullState {
        state_at(&self.base, self.base_seq, &self.log.lock().unwrap(), t)
    }

    fn entries(&self) -> Vec<WalEntry> {
        self.log.lock().unwrap().clone()
    }

    fn first_ts(&self) -> u64 {
        self.log.lock().unwrap().first().unwrap().timestamp
    }

    fn last_ts(&self) -> u64 {
        self.log.lock().unwrap().last().unwrap().timestamp
    }
}

/// Restores each of `seconds` into a fresh directory and compares it with `history`.
fn assert_restores(
    repo: &Repo,
    work: &Path,
    history: &History,
    seconds: impl IntoIterator<Item = u64>,
    what: &str,
) {
    for t in seconds {
        let target = work.join(format!("{what}-{t}"));
        restore_at(repo, &target, t).unwrap_or_else(|| panic!("{what} second {t}"));
        assert_same(
            &recovered_state(&target),
            &history.state_at(t),
            &format!("{what} second {t}"),
        );
        std::fs::remove_dir_all(&target).unwrap();
    }
}

/// The soak: a writer for `secs` seconds, the archiver killed `kills` times at random
/// instants (every other time only after a compaction while it is down), then every second
/// checked. Returns (seconds checked, gap seconds).
pub(crate) fn soak(repo: &Repo, work: &Path, secs: u64, kills: u64, seed: u64) -> (u64, u64) {
    let data = work.join("data");
    let engine = Engine::open(&data, 4);
    let history = History::of(&engine);
    let writer = Writer::start(engine, 200, 500);
    std::thread::sleep(Duration::from_millis(1200));
    let launched = now();
    let mut archiver = Archiver::start(repo, &data, &[]);
    assert!(archiver.wait_for(30, |e| e["event"] == "timeline"));
    let mut rng = Rng::new(seed);
    let mut down: Vec<(u64, u64)> = Vec::new();
    let mut events = Vec::new();
    let started = Instant::now();
    for k in 0..kills {
        let until = secs * (k + 1) / (kills + 1);
        let jitter = rng.below(900);
        while started.elapsed() < Duration::from_millis(until * 1000 + jitter) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let killed_at = now();
        events.extend(archiver.kill());
        if let (true, Some(dir)) = (repo.encrypted, repo.dir()) {
            // What a killed archiver left behind (its lease too) is sealed as well.
            let keys = assert_sealed(local_objects(dir));
            assert!(keys.contains(&"locks/archive.json".to_string()), "{keys:?}");
        }
        if k % 2 == 1 {
            // Frames the engine compacts away while nothing follows it: a gap.
            std::thread::sleep(Duration::from_millis(300));
            writer.compact();
        }
        std::thread::sleep(Duration::from_millis(700 + rng.below(600)));
        down.push((killed_at, now()));
        archiver = Archiver::start(repo, &data, &[]);
        assert!(archiver.wait_for(30, |e| e["event"] == "timeline"));
    }
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let engine = writer.finish();
    std::thread::sleep(Duration::from_millis(2500));
    events.extend(archiver.stop());
    let log = history.entries();
    let last_ts = history.last_ts();
    assert!(
        events.iter().any(|e| e["event"] == "base"),
        "bases were stored"
    );
    // Every timeline event after the first resumed the same history.
    let timelines: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "timeline").collect();
    assert_eq!(timelines[0]["reason"], "new");
    assert!(
        timelines[1..].iter().all(|e| e["reason"] == "resumed"),
        "{timelines:?}"
    );
    // The archive is continuous from the second its timeline started (the archiver's clock,
    // read once it has opened the repository: on a bucket, a moment after it was launched).
    let first_start: u64 = timelines[0]["timeline"].as_str().unwrap()[..10]
        .parse()
        .unwrap();
    assert!(
        (launched..launched + 10).contains(&first_start),
        "the timeline started at {first_start}, the archiver was launched at {launched}"
    );
    let gaps = gaps(&events);
    for &(from, to) in &gaps {
        assert!(
            down.iter().any(|&(a, b)| a <= from + 1 && to <= b + 1),
            "gap {from}..={to} lies inside a time the archiver was down: {down:?}"
        );
    }
    let in_gap = |t: u64| gaps.iter().any(|&(a, b)| a <= t && t <= b);
    let mut checked = 0;
    let mut gap_seconds = 0;
    for t in first_start..=last_ts {
        let target = work.join(format!("at-{t}"));
        let r = restore_at(repo, &target, t);
        if in_gap(t) {
            assert!(r.is_none(), "second {t} is in a reported gap, yet restored");
            gap_seconds += 1;
            continue;
        }
        let r = r.unwrap_or_else(|| panic!("second {t} is not restorable; gaps {gaps:?}"));
        assert_eq!(r["recovered_to"], t);
        assert_same(
            &recovered_state(&target),
            &history.state_at(t),
            &format!("second {t}"),
        );
        std::fs::remove_dir_all(&target).unwrap();
        checked += 1;
    }
    drop(engine);
    eprintln!(
        "soak: {} writes, {} seconds checked, {} gap seconds, gaps {gaps:?}, down {down:?}",
        log.len(),
        checked,
        gap_seconds
    );
    (checked, gap_seconds)
}

#[test]
fn every_second_restores_exactly_across_kills_on_a_local_repository() {
    on_disk(|repo, work| {
        kills_then_objects(repo, work, 14, 3, 7, &|| local_objects(repo.dir().unwrap()));
    });
}

#[test]
fn every_second_restores_exactly_across_kills_on_an_encrypted_repository() {
    on_encrypted_disk(|repo, work| {
        kills_then_objects(repo, work, 10, 2, 7, &|| local_objects(repo.dir().unwrap()));
    });
}

#[test]
fn every_second_restores_exactly_across_kills_on_a_bucket() {
    on_bucket(|repo, work| assert!(soak(repo, work, 12, 2, 11).0 >= 8));
}

#[test]
fn every_second_restores_exactly_across_kills_on_an_encrypted_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start();
    server.create_bucket("backups");
    let repo = Repo::bucket(&server, "prod", tmp.path()).encrypted();
    kills_then_objects(&repo, tmp.path(), 8, 1, 11, &|| {
        server
            .list_keys("backups", "prod/")
            .into_iter()
            .map(|(key, _)| {
                let bytes = server.get("backups", &key).unwrap();
                (key["prod/".len()..].to_string(), bytes)
            })
            .collect()
    });
}

/// [`soak`] (with at least all but 4 seconds checked), then: `verify --all` passes, and the
/// repository's `objects` (key, bytes) are all sealed and show no plaintext when it is
/// encrypted; when it is plain, they show the plaintext looked for (the needles are real).
fn kills_then_objects(
    repo: &Repo,
    work: &Path,
    secs: u64,
    kills: u64,
    seed: u64,
    objects: &dyn Fn() -> Vec<(String, Vec<u8>)>,
) {
    assert!(soak(repo, work, secs, kills, seed).0 >= secs - 4);
    if repo.encrypted {
        let keys = assert_sealed(objects());
        for kind in ["/wal/", "/bases/", "/chunks/", "/observed.json"] {
            assert!(
                keys.iter()
                    .any(|k| k.starts_with("archive/") && k.contains(kind)),
                "no {kind} object among {keys:?}"
            );
        }
    } else {
        let shown: std::collections::BTreeSet<&str> = objects()
            .iter()
            .flat_map(|(_, bytes)| plaintext_in(bytes))
            .collect();
        // (Not `wal_`: pieces are named by sequence numbers, and a base's MANIFEST lists no
        // segment.)
        for needle in NEEDLES.iter().map(|(what, _)| *what).chain(["snapshot_"]) {
            assert!(
                shown.contains(&needle),
                "a plain archive shows {needle}; it shows {shown:?}"
            );
        }
    }
    let out = repo
        .process(&work.join("data"))
        .args(["verify", "--all", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["archive"][0]["pieces"].as_u64().unwrap() > 0, "{r}");
}

/// Every object of a repository on disk: its key and bytes.
fn local_objects(dir: &Path) -> Vec<(String, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .map(|p| {
            let key = p.strip_prefix(dir).unwrap().display().to_string();
            (key, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Plaintext an archive of the [`Writer`]'s engine holds, as its bytes: the metadata of its
/// inserts and updates as the WAL encodes it (a length, then the bytes), and the JSON fields
/// of `observed.json` and of leases.
const NEEDLES: [(&str, &[u8]); 4] = [
    ("the metadata key seed", b"\x04\0\0\0\0\0\0\0seed"),
    (
        "the metadata tag=u",
        b"\x03\0\0\0\0\0\0\0tag\x01\0\0\0\0\0\0\0u",
    ),
    ("the field last_seq", b"\"last_seq\""),
    ("the field pid", b"\"pid\""),
];

/// The data dir's file names (a prefix, then at least 10 digits).
const FILE_NAMES: [&str; 2] = ["wal_", "snapshot_"];

/// The [`NEEDLES`] and [`FILE_NAMES`] that `bytes` holds.
fn plaintext_in(bytes: &[u8]) -> Vec<&'static str> {
    let mut found: Vec<&str> = NEEDLES
        .iter()
        .filter(|(_, n)| bytes.windows(n.len()).any(|w| w == *n))
        .map(|(what, _)| *what)
        .collect();
    for name in FILE_NAMES {
        let n = name.len();
        if bytes
            .windows(n + 10)
            .any(|w| w.starts_with(name.as_bytes()) && w[n..].iter().all(u8::is_ascii_digit))
        {
            found.push(name);
        }
    }
    found
}

/// Asserts that every object of an encrypted repository (key, bytes) but the marker and the
/// key slots is sealed and shows none of the plaintext looked for; returns their keys. (A
/// temporary file a killed writer left on disk may be a sealed object's beginning.)
fn assert_sealed(objects: Vec<(String, Vec<u8>)>) -> Vec<String> {
    const SEAL: &[u8; 8] = b"KYROSEAL";
    let mut keys = Vec::new();
    for (key, bytes) in objects {
        if key == "kyrodb-backup.json" || key.starts_with("keys/") {
            continue;
        }
        let head = &bytes[..bytes.len().min(8)];
        assert!(
            bytes.starts_with(SEAL) || (key.contains(".kbtmp-") && SEAL.starts_with(head)),
            "{key} is not sealed: it starts {:?}",
            String::from_utf8_lossy(head)
        );
        let shown = plaintext_in(&bytes);
        assert!(shown.is_empty(), "{key} shows {shown:?}");
        keys.push(key);
    }
    keys
}

/// Pieces and bases of a local repository's archive.
fn archive_objects(repo: &Path) -> (Vec<String>, Vec<String>) {
    let mut pieces = Vec::new();
    let mut bases = Vec::new();
    for p in walk(&repo.join("archive")) {
        let rel = p.strip_prefix(repo).unwrap().display().to_string();
        if rel.contains("/wal/") {
            pieces.push(rel);
        } else if rel.contains("/bases/") {
            bases.push(rel);
        }
    }
    (pieces, bases)
}

#[test]
fn idle_makes_no_objects_busy_makes_at_most_one_per_interval_and_small_ones_are_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let repo = Repo::local(&dir);
    let data = tmp.path().join("data");
    let mut engine = Engine::open(&data, 4);
    for i in 0..50 {
        engine.insert(i, i);
    }
    engine.snapshot();
    let archiver = Archiver::start(&repo, &data, &[]);
    assert!(archiver.wait_for(30, |e| e["event"] == "base"));
    // Idle: nothing written for 3 s, no piece appears (the heartbeat replaces one record).
    std::thread::sleep(Duration::from_millis(600));
    let before = archive_objects(&dir);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(archive_objects(&dir), before, "no object while idle");
    // Busy: 4 s of writes at 500 a second with a 200 ms interval: at most one piece per
    // interval, and merges of 4 into 1 keep the count down.
    let writer = Writer::start(engine, 500, 1_000_000);
    std::thread::sleep(Duration::from_secs(4));
    let engine = writer.finish();
    assert!(archiver.wait_for(10, |e| e["event"] == "merged"));
    let events = archiver.stop();
    let stored = events
        .iter()
        .rev()
        .find(|e| e.get("pieces").is_some() && e.get("event").is_none())
        .expect("final report")
        .clone();
    let pieces = stored["pieces"].as_u64().unwrap();
    assert!(
        (4..=4 * 5 + 6).contains(&pieces),
        "{pieces} pieces for 4 s at a 200 ms interval"
    );
    // Every frame after the snapshot's 50 (those are in the base), stored once.
    assert_eq!(
        stored["frames"].as_u64().unwrap(),
        engine.log.lock().unwrap().len() as u64 - 50,
        "every frame stored once"
    );
    let (left, _) = archive_objects(&dir);
    assert!(
        (left.len() as u64) < pieces,
        "merging left {} objects of {pieces} pieces",
        left.len()
    );
    assert!(left.iter().any(|p| p.ends_with("-1.frames")), "{left:?}");
}

/// Runs `f` on a repository in a directory, in a scratch directory.
fn on_disk(f: impl FnOnce(&Repo, &Path)) {
    let tmp = tempfile::tempdir().unwrap();
    f(&Repo::local(&tmp.path().join("backups")), tmp.path());
}

/// [`on_disk`], the repository encrypted.
fn on_encrypted_disk(f: impl FnOnce(&Repo, &Path)) {
    let tmp = tempfile::tempdir().unwrap();
    f(
        &Repo::local(&tmp.path().join("backups")).encrypted(),
        tmp.path(),
    );
}

/// Runs `f` on a repository in a bucket of a fresh local S3 server, in a scratch directory.
fn on_bucket(f: impl FnOnce(&Repo, &Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start();
    server.create_bucket("backups");
    f(&Repo::bucket(&server, "prod", tmp.path()), tmp.path());
}

#[test]
fn a_restore_into_the_followed_dir_starts_a_new_timeline_and_both_histories_restore() {
    on_disk(restore_into_the_followed_dir);
}

#[test]
fn a_restore_into_the_followed_dir_starts_a_new_timeline_on_a_bucket_too() {
    on_bucket(restore_into_the_followed_dir);
}

fn restore_into_the_followed_dir(repo: &Repo, work: &Path) {
    let tmp = work;
    let data = tmp.join("data");
    let engine = Engine::open(&data, 4);
    let old = History::of(&engine);
    let writer = Writer::start(engine, 100, 1_000_000);
    let archiver = Archiver::start(repo, &data, &[]);
    std::thread::sleep(Duration::from_millis(3500));
    drop(writer.finish());
    std::thread::sleep(Duration::from_millis(2500));
    let log1 = old.entries();
    // Bring back an earlier second into the followed dir while the archiver runs.
    let point = log1[log1.len() / 2].timestamp;
    let restore_started = now();
    let out = repo
        .process(&data)
        .env("BACKUP_ALLOW_CLEAR", "true")
        .args(["restore", "--point-in-time", &point.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored_at = now();
    std::thread::sleep(Duration::from_millis(1500));
    // The engine starts on the restored dir and writes another history.
    let engine = Engine::open(&data, 4);
    let new = History::of(&engine);
    let writer = Writer::start(engine, 100, 1_000_000);
    assert!(archiver.wait_for(20, |e| e["event"] == "timeline"
        && e["reason"] == "diverged"));
    std::thread::sleep(Duration::from_millis(2500));
    drop(writer.finish());
    std::thread::sleep(Duration::from_millis(2500));
    let events = archiver.stop();
    let timelines: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "timeline").collect();
    assert_eq!(timelines.len(), 2, "{timelines:?}");
    let started = |i: usize| {
        timelines[i]["timeline"].as_str().unwrap()[..10]
            .parse::<u64>()
            .unwrap()
    };
    let (first_started, second_started) = (started(0), started(1));
    assert!(
        first_started.max(old.last_ts() - 1) < restore_started - 1,
        "some seconds of the first history are checked"
    );
    // Seconds of the first history, up to the restore, come back from it ...
    // (The seconds while the restore swapped the directory belong to neither.)
    assert!(
        restored_at - restore_started <= 2,
        "the restore took too long to test this"
    );
    assert_restores(
        repo,
        tmp,
        &old,
        first_started.max(old.last_ts() - 1)..restore_started - 1,
        "old",
    );
    // ... and seconds after the new timeline started from the second one.
    assert_restores(repo, tmp, &new, second_started..=new.last_ts(), "new");
}

#[test]
fn prune_racing_the_archiver_never_removes_a_needed_frame() {
    on_disk(prune_racing_the_archiver);
}

#[test]
fn prune_racing_the_archiver_on_a_bucket_never_removes_a_needed_frame() {
    on_bucket(prune_racing_the_archiver);
}

fn prune_racing_the_archiver(repo: &Repo, work: &Path) {
    let tmp = work;
    let data = tmp.join("data");
    let engine = Engine::open(&data, 4);
    let history = History::of(&engine);
    // Snapshots every 1.5 s (new bases), so older bases and pieces become prunable.
    let writer = Writer::start(engine, 200, 300);
    let archiver = Archiver::start(repo, &data, &[]);
    assert!(archiver.wait_for(20, |e| e["event"] == "timeline"));
    let started = Instant::now();
    let mut prunes = 0;
    let mut removed = 0;
    // 12 s of racing, longer (up to 40 s) on a loaded machine until a prune has removed pieces.
    while started.elapsed() < Duration::from_secs(12)
        || (removed == 0 && started.elapsed() < Duration::from_secs(40))
    {
        let out = repo
            .process(&data)
            .args(["prune", "--format", "json", "--keep-within", "4s"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        removed += r["archive"]["pieces_removed"]
            .as_array()
            .map_or(0, Vec::len);
        prunes += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    let last_prune = now();
    drop(writer.finish());
    std::thread::sleep(Duration::from_millis(2500));
    archiver.stop();
    assert!(removed > 0, "prunes removed pieces");
    // Every second of the window the last prune kept restores exactly.
    assert_restores(
        repo,
        tmp,
        &history,
        last_prune - 4..=history.last_ts(),
        "window",
    );
    eprintln!("{prunes} prunes removed {removed} pieces");
}

#[test]
fn check_max_lag_fails_when_the_archiver_stops_or_falls_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let repo = Repo::local(&dir);
    let data = tmp.path().join("data");
    let mut engine = Engine::open(&data, 4);
    engine.insert(1, 1);
    let check = |max: &str| {
        repo.process(&data)
            .args(["check", "--format", "json", "--max-lag", max])
            .output()
            .unwrap()
    };
    // No archive yet: not ok.
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(check("30s").status.code(), Some(3));
    let archiver = Archiver::start(&repo, &data, &[]);
    assert!(archiver.wait_for(20, |e| e["event"] == "status"));
    std::thread::sleep(Duration::from_millis(1500));
    let out = check("30s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    archiver.kill();
    // The engine writes on; nothing stores it.
    engine.insert(2, 2);
    std::thread::sleep(Duration::from_millis(3200));
    let out = check("2s");
    assert_eq!(out.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], false);
    let problem = r["archive"]["problem"].as_str().unwrap();
    assert!(
        problem.contains("no archiver has reported") || problem.contains("not yet archived"),
        "{problem}"
    );
    // Started again, it catches up and check passes.
    let archiver = Archiver::start(&repo, &data, &[]);
    std::thread::sleep(Duration::from_secs(2));
    let out = check("30s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    archiver.stop();
}

#[test]
fn a_second_archiver_on_the_same_repository_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    let repo = Repo::local(&dir);
    let data = tmp.path().join("data");
    let mut engine = Engine::open(&data, 4);
    engine.insert(1, 1);
    let archiver = Archiver::start(&repo, &data, &[]);
    assert!(archiver.wait_for(20, |e| e["event"] == "timeline"));
    let out = repo.process(&data).args(["archive"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already follows it"), "{err}");
    assert!(
        err.contains("hint: one archiver follows a repository"),
        "{err}"
    );
    archiver.stop();
}

#[test]
fn a_store_that_fails_for_a_while_loses_nothing_and_an_archiver_without_delete_rights_still_archives(
) {
    use crate::support::proxy::Proxy;
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start();
    server.create_bucket("backups");
    let proxy = Proxy::start(server.port());
    // Credentials that may not delete: merges leave their small pieces, nothing breaks.
    proxy.deny_deletes(true);
    let mut repo = Repo::bucket(&server, "prod", tmp.path());
    for (k, v) in &mut repo.env {
        if k == "AWS_ENDPOINT_URL" {
            *v = proxy.endpoint();
        }
    }
    let data = tmp.path().join("data");
    let engine = Engine::open(&data, 4);
    let history = History::of(&engine);
    let writer = Writer::start(engine, 200, 400);
    let archiver = Archiver::start(&repo, &data, &[]);
    assert!(archiver.wait_for(30, |e| e["event"] == "timeline"));
    std::thread::sleep(Duration::from_millis(1500));
    // Every PUT fails for a while (503, more than the client's retries): the archiver keeps
    // what it read and stores it once the store answers again.
    proxy.fail_matching("PUT", "/backups/prod/archive/", 60, 503);
    std::thread::sleep(Duration::from_secs(4));
    drop(writer.finish());
    std::thread::sleep(Duration::from_secs(3));
    let events = archiver.stop();
    assert!(
        events.iter().any(|e| e["event"] == "warning"),
        "the failures were reported"
    );
    proxy.deny_deletes(false);
    // Every second from the timeline's start (the archiver's clock once it had opened the
    // bucket) to the last write.
    let started = events
        .iter()
        .find(|e| e["event"] == "timeline")
        .and_then(|e| e["timeline"].as_str()?[..10].parse::<u64>().ok())
        .unwrap();
    assert_restores(
        &repo,
        tmp.path(),
        &history,
        started.max(history.first_ts() + 1)..=history.last_ts(),
        "after",
    );
}

/// The long soak (`cargo xtask archive-soak`): `KYRODB_SOAK_SECS` of writing (default 300)
/// with a kill every 20 s on average, on a local repository, then on a bucket when
/// `KYRODB_SOAK_S3` is set.
#[test]
#[ignore = "minutes long: run by cargo xtask archive-soak"]
fn long_soak() {
    let secs: u64 = std::env::var("KYRODB_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let kills = (secs / 20).max(1);
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::local(&tmp.path().join("backups"));
    let (checked, gap) = soak(&repo, &tmp.path().join("local"), secs, kills, 99);
    eprintln!("local: {checked} seconds restored exactly, {gap} gap seconds, {kills} kills");
    if std::env::var_os("KYRODB_SOAK_S3").is_some() {
        let server = S3Server::start();
        server.create_bucket("backups");
        let repo = Repo::bucket(&server, "soak", tmp.path());
        let (checked, gap) = soak(&repo, &tmp.path().join("s3"), secs, kills, 98);
        eprintln!("bucket: {checked} seconds restored exactly, {gap} gap seconds, {kills} kills");
    }
}

#[test]
fn verify_reads_every_archived_object_and_restore_refuses_a_damaged_one() {
    on_disk(verify_reads_every_archived_object);
}

#[test]
fn verify_reads_every_object_of_an_encrypted_archive_and_restore_refuses_a_damaged_one() {
    on_encrypted_disk(verify_reads_every_archived_object);
}

fn verify_reads_every_archived_object(repo: &Repo, work: &Path) {
    let dir = repo.dir().unwrap();
    let data = work.join("data");
    let mut engine = Engine::open(&data, 4);
    for i in 0..40 {
        engine.insert(i, i);
    }
    engine.snapshot();
    let log = Arc::clone(&engine.log);
    let writer = Writer::start(engine, 100, 1_000_000);
    let archiver = Archiver::start(repo, &data, &[]);
    assert!(archiver.wait_for(30, |e| e["event"] == "base"));
    std::thread::sleep(Duration::from_secs(2));
    drop(writer.finish());
    std::thread::sleep(Duration::from_secs(3));
    archiver.stop();
    let verify = || {
        repo.process(&data)
            .args(["verify", "--all", "--format", "json"])
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let r: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(r["archive"][0]["pieces"].as_u64().unwrap() > 0);
    assert_eq!(r["archive"][0]["bases"], 1);
    // One flipped byte in the newest piece: verify names it, restore refuses before writing.
    let (pieces, _) = archive_objects(dir);
    let newest = pieces.iter().max().unwrap();
    let path = dir.join(newest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let bad = verify();
    assert_eq!(bad.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    let problem = r["archive"][0]["problems"][0]["file"].as_str().unwrap();
    assert!(
        problem.ends_with(newest.rsplit('/').next().unwrap()),
        "{problem}"
    );
    let t = log.lock().unwrap().last().unwrap().timestamp;
    let target = work.join("restored");
    let out = repo
        .process(&target)
        .args(["restore", "--point-in-time", &t.to_string()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists(), "nothing written");
    // A damaged base chunk is found too.
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let chunk = walk(&dir.join("archive"))
        .into_iter()
        .find(|p| p.display().to_string().contains("/chunks/"))
        .unwrap();
    let mut c = std::fs::read(&chunk).unwrap();
    let last = c.len() - 1;
    c[last] ^= 1;
    std::fs::write(&chunk, &c).unwrap();
    let bad = verify();
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("/bases/"));
}
