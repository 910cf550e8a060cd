//! `cargo xtask bench-archive [--rate N] [--seconds N] [--soak-minutes N] [--s3]`: measures
//! the continuous WAL archive (`archive --interval 1s`, release build) following a writer that
//! keeps the engine's persistence protocol (`tests/it/support/engine.rs`: frames of dimension
//! 32 over 10,000 documents, an update and a delete in every ten frames, a new segment every
//! 20,000 frames), on a local repository and, with `--s3`, on a bucket of a local S3 server
//! (moto, or `--server s3s-fs`) on 127.0.0.1. One archiver follows each run; per repository:
//!
//! 1. idle: `--idle-seconds` without writes;
//! 2. busy: a steady `--rate` frames/s for `--seconds`;
//! 3. steps: the rates of `--steps`, `--step-seconds` each (a snapshot before each step);
//! 4. soak: a new data dir and repository, `--soak-rate` frames/s for `--soak-minutes` with a
//!    snapshot every `--soak-snapshot-every` seconds, every archiver setting at its default
//!    (merges every 60 s, fan-in 60). The soaks of the two repositories run at the same time
//!    (a light load: they count objects, not time).
//!
//! Every second of 1-3 the recovery point is sampled: now minus the newest instant before which
//! the archive proves every write stored, that is the greatest `observed_at` of the newest
//! timeline's piece names (`archive/<tl>/wal/`) and its `observed.json`, as listed. CPU (% of
//! one core, from `/proc/<pid>/stat`) and memory (`VmRSS`, `VmHWM`) are the archiver's;
//! requests are the heartbeats' `requests` (what the archiver sent to the store); objects
//! created are keys under `archive/` listed at the end of a stretch and not at its start.
//! A step is followed when its recovery point's p95 is at most the interval plus the second
//! that whole-second timestamps add, and no heartbeat in it reported a `lag_seconds` above
//! that. The soak's month: level-0 pieces at the rate measured, merged `fan_in` into one as
//! long as the merged piece fits in 64 MiB, plus a base per `--soak-snapshot-every` seconds
//! and its chunks (the formula is printed with the figures).
//! After each run `--checks` random seconds of it, and its last second written, are restored
//! with `restore --point-in-time` and compared with the writer's log; any difference fails
//! the task (after the figures are printed). A table per repository, then one JSON document.

#[path = "../../tests/it/support/engine.rs"]
mod engine;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use kyrodb_backup_format::engine::{recover, DirSource, FullState, RecoveryOptions, WalEntry};
use kyrodb_backup_format::repo::PieceName;
use kyrodb_backup_storage::backend::{Location, S3Config};
use kyrodb_backup_storage::Repository;
use serde_json::{json, Value};

use crate::bench_s3::Moto;
use crate::util::{build_binary, median, root};
use engine::{state_after, Engine};

/// Arguments of `cargo xtask bench-archive`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Frames a second of the steady load (the busy figures and the recovery point).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    rate: u64,
    /// Seconds of the steady load.
    #[arg(long, value_name = "N", default_value_t = 60)]
    seconds: u64,
    /// Seconds without writes (the idle figures).
    #[arg(long, value_name = "N", default_value_t = 30)]
    idle_seconds: u64,
    /// Writer rates of the steps, in frames a second (`max`: as fast as the writer goes).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1000,5000,20000,50000,100000,max"
    )]
    steps: Vec<String>,
    /// Seconds of each step.
    #[arg(long, value_name = "N", default_value_t = 20)]
    step_seconds: u64,
    /// Minutes of the soak with merging (0: no soak).
    #[arg(long, value_name = "N", default_value_t = 10)]
    soak_minutes: u64,
    /// Frames a second of the soak.
    #[arg(long, value_name = "N", default_value_t = 200)]
    soak_rate: u64,
    /// Seconds between the engine's snapshots in the soak (at most a third of the soak).
    #[arg(long, value_name = "N", default_value_t = 180)]
    soak_snapshot_every: u64,
    /// Random seconds of each run restored and compared with the writer's log (besides the
    /// last second written).
    #[arg(long, value_name = "N", default_value_t = 4)]
    checks: u64,
    /// Seed of the choice of seconds to check.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Also measure a bucket of a local S3 server.
    #[arg(long)]
    s3: bool,
    /// The S3 server with `--s3`: `moto` (`pip install 'moto[server]'`, or the S3 tests'
    /// `target/tmp/moto-venv`) or `s3s-fs` (on `PATH` or in `$KYRODB_BENCH_TOOLS/bin`, by default
    /// `target/tools/bin`).
    #[arg(long, value_name = "NAME", default_value = "moto")]
    server: String,
    /// Where to put the data dirs and repositories [default: target/bench-archive].
    #[arg(long, value_name = "D")]
    dir: Option<PathBuf>,
}

/// Dimension of the vectors written.
const DIMENSION: usize = 32;
/// Documents the writer cycles through.
const KEYS: u64 = 10_000;
/// Frames per WAL segment.
const ROTATE_EVERY: u64 = 20_000;
/// The writer's rate meaning "as fast as it goes".
const FLAT_OUT: u64 = u64::MAX;
/// The archiver's `--interval` in seconds (given to it as `1s`).
const INTERVAL: f64 = 1.0;
/// Bytes a piece object adds to its frames (header and hash).
const PIECE_OVERHEAD: u64 = 12 + 68 + 16;
/// `archive`'s default `--merge-fan-in`, which the soak runs with and extrapolates by.
const MERGE_FAN_IN: u64 = 60;
/// Seconds of the month extrapolated to (30 days).
/// The archiver's largest merged piece (`MERGE_LIMIT` in `crates/ops/src/archive.rs`).
const MERGE_LIMIT: u64 = 32 << 20;
const MONTH_SECS: f64 = 30.0 * 86_400.0;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn now_secs() -> u64 {
    unix_now() as u64
}

/// A step of `SplitMix64`, for the seconds to check.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ----------------------------------------------------------------------------------------
// The writer
// ----------------------------------------------------------------------------------------

/// What the writer thread and the bench share.
#[derive(Default)]
struct Shared {
    /// Frames a second (0: paused, [`FLAT_OUT`]: no pause).
    rate: AtomicU64,
    /// Frames written by the writer thread.
    frames: AtomicU64,
    /// Sequence number of the last frame written.
    last_seq: AtomicU64,
    snapshot_now: AtomicBool,
    stop: AtomicBool,
    /// Seconds whose state to keep; the writer moves them to `expected` once they are over.
    wanted: Mutex<BTreeSet<u64>>,
    expected: Mutex<BTreeMap<u64, FullState>>,
}

/// An engine over a data dir, written to by a thread at the rate asked for.
struct Writer {
    shared: Arc<Shared>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// The state at second `t` by the log of frames after `seq` (whose state is `base`).
fn state_at(base: &FullState, seq: u64, log: &[WalEntry], t: u64) -> FullState {
    let upto = log
        .iter()
        .take_while(|e| e.timestamp <= t)
        .last()
        .map_or(seq, |e| e.seq_no);
    state_after(base, seq, log, upto)
}

fn write_frame(engine: &mut Engine, k: u64) {
    match k % 10 {
        3 => engine.update((k * 7) % KEYS, "u"),
        6 => engine.delete((k * 13) % KEYS),
        _ => engine.insert(k % KEYS, k),
    }
    if (k + 1).is_multiple_of(ROTATE_EVERY) {
        engine.rotate();
    }
}

/// The writer thread. Once a second it keeps the state of the seconds asked for (from the
/// state at the previous second and the log since), then forgets the log, so memory stays
/// flat at any rate.
fn write_loop(mut engine: Engine, shared: &Shared, snapshot_every: Option<u64>) {
    // The state after frame `seq`, by the log since the engine opened the dir; every frame
    // in it is at or before second `at`.
    let log = std::mem::take(&mut *engine.log.lock().unwrap());
    let mut seq = log.last().map_or(engine.base_seq, |e| e.seq_no);
    let mut state = state_after(&engine.base_state, engine.base_seq, &log, seq);
    assert!(
        state == engine.state,
        "the log replays to the engine's state"
    );
    drop(log);
    shared.last_seq.store(seq, Ordering::Relaxed);
    let mut at = now_secs();
    let mut last_snapshot = at;
    let mut k = 0u64;
    let (mut since, mut k_since, mut rate) = (Instant::now(), 0u64, 0u64);
    while !shared.stop.load(Ordering::Relaxed) {
        let sec = now_secs();
        if sec != at {
            let log = std::mem::take(&mut *engine.log.lock().unwrap());
            let due: Vec<u64> = {
                let mut wanted = shared.wanted.lock().unwrap();
                let due: Vec<u64> = wanted.range(..sec).copied().collect();
                for t in &due {
                    wanted.remove(t);
                }
                due
            };
            for t in due.into_iter().filter(|&t| t >= at) {
                let s = state_at(&state, seq, &log, t);
                shared.expected.lock().unwrap().insert(t, s);
            }
            seq = log.last().map_or(seq, |e| e.seq_no);
            state = engine.state.clone();
            at = sec;
            if snapshot_every.is_some_and(|every| sec >= last_snapshot + every) {
                engine.snapshot();
                last_snapshot = sec;
            }
        }
        if shared.snapshot_now.load(Ordering::Relaxed) {
            engine.snapshot();
            shared.snapshot_now.store(false, Ordering::Relaxed);
        }
        let r = shared.rate.load(Ordering::Relaxed);
        if r != rate {
            (since, k_since, rate) = (Instant::now(), k, r);
        }
        let n = match rate {
            0 => 0,
            FLAT_OUT => 64,
            _ => {
                let due = k_since + (since.elapsed().as_secs_f64() * rate as f64) as u64;
                due.saturating_sub(k).min(64)
            }
        };
        if n == 0 {
            std::thread::sleep(Duration::from_micros(if rate == 0 { 5000 } else { 500 }));
            continue;
        }
        for _ in 0..n {
            write_frame(&mut engine, k);
            k += 1;
        }
        shared.frames.fetch_add(n, Ordering::Relaxed);
        shared.last_seq.store(
            engine.log.lock().unwrap().last().map_or(seq, |e| e.seq_no),
            Ordering::Relaxed,
        );
    }
}

impl Writer {
    /// Makes a data dir of [`KEYS`] documents and a snapshot of them, and starts the writer
    /// thread, paused.
    fn start(data: &Path, snapshot_every: Option<u64>) -> Self {
        let _ = fs::remove_dir_all(data);
        let mut engine = Engine::open(data, DIMENSION);
        for id in 0..KEYS {
            engine.insert(id, id);
        }
        engine.snapshot();
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let handle = std::thread::spawn(move || write_loop(engine, &s, snapshot_every));
        Self {
            shared,
            handle: Some(handle),
        }
    }

    fn set_rate(&self, rate: u64) {
        self.shared.rate.store(rate, Ordering::Relaxed);
    }

    fn frames(&self) -> u64 {
        self.shared.frames.load(Ordering::Relaxed)
    }

    /// Takes a snapshot (which deletes the segments it covers) and waits until it is done.
    fn snapshot(&self) {
        self.shared.snapshot_now.store(true, Ordering::Relaxed);
        while self.shared.snapshot_now.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks for the state at `n` random seconds of `from..to` to be kept.
    fn want_random(&self, from: u64, to: u64, n: u64, rng: &mut u64) {
        let mut wanted = self.shared.wanted.lock().unwrap();
        for _ in 0..n {
            if to > from {
                wanted.insert(from + mix(rng) % (to - from));
            }
        }
    }

    /// Stops writing and asks for the state of the last second written; returns that second
    /// and the last frame.
    fn pause(&self) -> (u64, u64) {
        self.shared.rate.store(0, Ordering::Relaxed);
        // Until a batch under way (a rotation in it, say) is over.
        let mut frames = self.frames();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.frames();
            if now == frames {
                break;
            }
            frames = now;
        }
        let last = now_secs();
        self.shared.wanted.lock().unwrap().insert(last);
        (last, self.shared.last_seq.load(Ordering::Relaxed))
    }

    /// Stops the thread; returns the states kept.
    fn finish(self) -> BTreeMap<u64, FullState> {
        let shared = Arc::clone(&self.shared);
        drop(self);
        let kept = std::mem::take(&mut *shared.expected.lock().unwrap());
        kept
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Bytes of WAL frames in the data dir's segments.
fn wal_bytes(data: &Path) -> u64 {
    fs::read_dir(data)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .map(|e| e.metadata().map_or(0, |m| m.len().saturating_sub(4)))
        .sum()
}

// ----------------------------------------------------------------------------------------
// Repositories and the archiver
// ----------------------------------------------------------------------------------------

/// A repository: how the binary names it, and how this process lists it.
struct Repo {
    /// `local` or `bucket`.
    kind: &'static str,
    arg: String,
    env: Vec<(String, String)>,
    location: Location,
}

impl Repo {
    fn local(dir: &Path) -> Self {
        let _ = fs::remove_dir_all(dir);
        Self {
            kind: "local",
            arg: dir.display().to_string(),
            env: Vec::new(),
            location: Location::local(dir),
        }
    }

    fn bucket(endpoint: &str, bucket: &str, prefix: &str, home: &Path) -> Self {
        let mut config = S3Config::new(bucket, prefix);
        config.region = Some("us-east-1".into());
        config.endpoint = Some(endpoint.into());
        config.access_key_id = Some("testing".into());
        config.secret_access_key = Some("testing".into());
        let env = [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint),
            // No ~/.aws of this machine.
            ("HOME", &home.display().to_string()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
        Self {
            kind: "bucket",
            arg: format!("s3://{bucket}/{prefix}"),
            env,
            location: Location::S3(config),
        }
    }

    /// The binary with this repository and `data` as its data dir.
    fn command(&self, bin: &Path, data: &Path) -> Command {
        let mut c = Command::new(bin);
        c.env_remove("AWS_PROFILE")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--data-dir")
            .arg(data)
            .arg("--backup-dir")
            .arg(&self.arg);
        c
    }

    fn open(&self) -> Result<Repository> {
        Repository::open_at(&self.location).with_context(|| format!("opening {}", self.arg))
    }
}

/// Every key under `archive/`.
fn archive_keys(repo: &Repository) -> Result<BTreeSet<String>> {
    Ok(repo
        .backend()
        .list("archive/")?
        .into_iter()
        .map(|e| e.key)
        .collect())
}

/// The newest timeline's proof: (`observed_at`, last frame stored).
fn proof(repo: &Repository) -> Result<(u64, u64)> {
    let timelines = repo.archive_timelines()?;
    Ok(timelines
        .last()
        .map_or((0, 0), |t| (t.observed_at(), t.newest_seq())))
}

/// One event of the archiver, with the Unix time it was read.
type Events = Arc<Mutex<Vec<(f64, Value)>>>;

/// A running `archive --format json`, its events collected.
struct Archiver {
    child: Child,
    events: Events,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Archiver {
    fn start(bin: &Path, repo: &Repo, data: &Path, log: &Path) -> Result<Self> {
        let mut child = repo
            .command(bin, data)
            .args(["--format", "json", "archive", "--interval", "1s"])
            .stdout(Stdio::piped())
            .stderr(fs::File::create(log)?)
            .spawn()?;
        let events: Events = Arc::default();
        let out = child.stdout.take().context("archiver stdout")?;
        let sink = Arc::clone(&events);
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                text.push_str(&line);
                text.push('\n');
                // Events are one line each; the final report is pretty-printed over several.
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    sink.lock().unwrap().push((unix_now(), v));
                    text.clear();
                }
            }
        });
        let archiver = Self {
            child,
            events,
            reader: Some(reader),
        };
        ensure!(
            archiver.wait_for(60, |e| e["event"] == "timeline"),
            "the archiver did not start (see {})",
            log.display()
        );
        Ok(archiver)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for(&self, secs: u64, pred: impl Fn(&Value) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.events.lock().unwrap().iter().any(|(_, e)| pred(e)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn events(&self) -> Vec<(f64, Value)> {
        self.events.lock().unwrap().clone()
    }

    /// SIGTERM; returns every event and the final report, and writes them to `keep` (one
    /// line each, with the Unix time it was read as `read_at`).
    fn stop(mut self, keep: &Path) -> Result<(Vec<(f64, Value)>, Value)> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(sent.success(), "kill -TERM {}", self.child.id());
        let status = self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        ensure!(status.success(), "archive exits 0 on SIGTERM: {status}");
        let events = self.events();
        let mut lines = String::new();
        for (at, e) in &events {
            lines.push_str(&json!({"read_at": at, "line": e}).to_string());
            lines.push('\n');
        }
        fs::write(keep, lines)?;
        let report = events
            .iter()
            .rev()
            .find(|(_, e)| e.get("event").is_none())
            .map(|(_, e)| e.clone())
            .context("no final report")?;
        Ok((events, report))
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until the archiver can prove second `last` complete (its proofs are whole seconds:
/// a poll that finds nothing new at second `last + 2` proves every frame of `last` stored) and
/// the writer has kept the state of `last`; with SIGTERM then, the last heartbeat says so.
fn settle(last: u64) {
    let until = last as f64 + 2.3;
    let wait = until - unix_now();
    if wait > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(wait));
    }
}

/// Waits until the archive holds frame `seq`; returns the seconds it took.
fn drain(repo: &Repository, seq: u64, secs: u64) -> Result<f64> {
    let start = Instant::now();
    while proof(repo)?.1 < seq {
        ensure!(
            start.elapsed() < Duration::from_secs(secs),
            "the archive did not reach frame {seq} within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(start.elapsed().as_secs_f64())
}

// ----------------------------------------------------------------------------------------
// /proc
// ----------------------------------------------------------------------------------------

/// Clock ticks a second of `/proc/<pid>/stat`.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line; `after` starts at field 3.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// (`VmRSS`, `VmHWM`) of a process in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ----------------------------------------------------------------------------------------
// Measurements
// ----------------------------------------------------------------------------------------

/// What one stretch of a run measured.
struct Stretch {
    name: String,
    /// Unix seconds.
    start: f64,
    end: f64,
    cpu_percent: f64,
    rss_max_kib: u64,
    hwm_kib: u64,
    /// Recovery point samples, seconds.
    rp: Vec<f64>,
    /// The longest listing a sample took, seconds.
    list_max: f64,
    frames: u64,
    wal_bytes: u64,
    created: usize,
    deleted: usize,
    /// Filled from the events once the run is over.
    lag_max: Option<u64>,
    pending_max: Option<u64>,
    requests_per_hour: Option<(f64, f64)>,
}

/// The nearest-rank percentile `p` (0..=100).
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}

fn max_of(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

impl Stretch {
    fn mb_per_sec(&self) -> f64 {
        self.wal_bytes as f64 / 1e6 / (self.end - self.start)
    }

    fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / (self.end - self.start)
    }

    /// The figures of events between `start` and `end`.
    fn fill_from(&mut self, events: &[(f64, Value)]) {
        let status: Vec<(f64, &Value)> = events
            .iter()
            .filter(|(_, e)| e["event"] == "status")
            .map(|(t, e)| (*t, e))
            .collect();
        let inside: Vec<&(f64, &Value)> = status
            .iter()
            .filter(|(t, _)| *t >= self.start && *t <= self.end + 0.5)
            .collect();
        self.lag_max = inside
            .iter()
            .filter_map(|(_, e)| e["lag_seconds"].as_u64())
            .max();
        self.pending_max = inside
            .iter()
            .filter_map(|(_, e)| e["pending_bytes"].as_u64())
            .max();
        // Requests between two heartbeats inside the stretch; else the heartbeats around it.
        let pair = if inside.len() >= 2 && inside[inside.len() - 1].0 - inside[0].0 >= 5.0 {
            Some((*inside[0], *inside[inside.len() - 1]))
        } else {
            let before = status.iter().rev().find(|(t, _)| *t <= self.start);
            let after = status.iter().find(|(t, _)| *t >= self.end);
            before.zip(after).map(|(a, b)| (*a, *b))
        };
        self.requests_per_hour = pair.and_then(|((t0, a), (t1, b))| {
            let n = b["requests"]
                .as_u64()?
                .checked_sub(a["requests"].as_u64()?)?;
            (t1 > t0).then(|| (n as f64 / (t1 - t0) * 3600.0, t1 - t0))
        });
    }

    /// Keeps up: the recovery point stays within the interval plus the second of timestamp
    /// rounding, and no heartbeat saw a frame waiting longer than that.
    fn followed(&self) -> bool {
        percentile(&self.rp, 95.0) <= INTERVAL + 1.0
            && self.lag_max.is_none_or(|l| l as f64 <= INTERVAL + 1.0)
    }

    fn json(&self) -> Value {
        json!({
            "seconds": self.end - self.start,
            "frames_per_sec": self.frames_per_sec(),
            "mb_per_sec": self.mb_per_sec(),
            "recovery_point": {
                "median": median(self.rp.clone()),
                "p95": percentile(&self.rp, 95.0),
                "max": max_of(&self.rp),
                "samples": self.rp.len(),
                "longest_listing_seconds": self.list_max,
            },
            "lag_seconds_max": self.lag_max,
            "pending_bytes_max": self.pending_max,
            "cpu_percent_of_one_core": self.cpu_percent,
            "vm_rss_max_kib": self.rss_max_kib,
            "vm_hwm_kib": self.hwm_kib,
            "requests_per_hour": self.requests_per_hour.map(|r| r.0),
            "requests_window_seconds": self.requests_per_hour.map(|r| r.1),
            "objects_created": self.created,
            "objects_deleted": self.deleted,
            "objects_created_per_hour": self.created as f64 / (self.end - self.start) * 3600.0,
        })
    }
}

/// Samples a stretch of `secs` seconds: the recovery point every second, the archiver's CPU
/// and memory, what was written, and the keys created.
fn measure(
    name: &str,
    secs: u64,
    archiver: &Archiver,
    repo: &Repository,
    writer: &Writer,
    data: &Path,
) -> Result<Stretch> {
    let pid = archiver.pid();
    let keys0 = archive_keys(repo)?;
    let (frames0, wal0) = (writer.frames(), wal_bytes(data));
    let (start, t0, cpu0) = (Instant::now(), unix_now(), cpu_ticks(pid)?);
    let mut rp = Vec::new();
    let (mut rss_max, mut list_max) = (0, 0.0f64);
    // One sample a second, at a random instant of it, so that the samples do not all fall
    // at the same moment of the archiver's cycle.
    let mut jitter = (t0.fract() * 1e9) as u64;
    for i in 0..secs {
        let at = i as f64 + (mix(&mut jitter) % 1000) as f64 / 1000.0;
        let until = start + Duration::from_secs_f64(at);
        if let Some(d) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let listing = Instant::now();
        let (observed, _) = proof(repo)?;
        list_max = list_max.max(listing.elapsed().as_secs_f64());
        // As of the end of the listing: a recovery point never better than the truth.
        rp.push(unix_now() - observed as f64);
        rss_max = rss_max.max(memory_kib(pid).0);
    }
    if let Some(d) = (start + Duration::from_secs(secs)).checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
    let (cpu1, elapsed, t1) = (cpu_ticks(pid)?, start.elapsed().as_secs_f64(), unix_now());
    let (frames1, wal1) = (writer.frames(), wal_bytes(data));
    let keys1 = archive_keys(repo)?;
    Ok(Stretch {
        name: name.to_string(),
        start: t0,
        end: t1,
        cpu_percent: (cpu1 - cpu0) as f64 / clock_ticks() / elapsed * 100.0,
        rss_max_kib: rss_max,
        hwm_kib: memory_kib(pid).1,
        rp,
        list_max,
        frames: frames1 - frames0,
        wal_bytes: wal1.saturating_sub(wal0),
        created: keys1.difference(&keys0).count(),
        deleted: keys0.difference(&keys1).count(),
        lag_max: None,
        pending_max: None,
        requests_per_hour: None,
    })
}

/// Restores every second kept and compares it with the writer's log; returns (seconds
/// restored exactly, failures).
fn check(
    bin: &Path,
    repo: &Repo,
    scratch: &Path,
    expected: &BTreeMap<u64, FullState>,
) -> Result<(Vec<u64>, Vec<String>)> {
    fs::create_dir_all(scratch)?;
    let mut exact = Vec::new();
    let mut failures = Vec::new();
    for (&t, want) in expected {
        let target = scratch.join(format!("restored-{t}"));
        let _ = fs::remove_dir_all(&target);
        let out = repo
            .command(bin, &target)
            .args([
                "--format",
                "json",
                "restore",
                "--point-in-time",
                &t.to_string(),
            ])
            .output()?;
        if !out.status.success() {
            failures.push(format!(
                "second {t}: restore exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let r: Value = serde_json::from_slice(&out.stdout)?;
        if r["recovered_to"] != t {
            failures.push(format!("second {t}: recovered_to {}", r["recovered_to"]));
            continue;
        }
        let mut got = FullState::default();
        recover(
            &mut DirSource::new(&target),
            &mut got,
            &RecoveryOptions {
                torn_tail_is_error: false,
            },
        )?;
        if &got == want {
            exact.push(t);
        } else {
            let differ = want
                .docs
                .iter()
                .filter(|(id, d)| got.docs.get(id) != Some(d))
                .count()
                + got
                    .docs
                    .keys()
                    .filter(|id| !want.docs.contains_key(id))
                    .count();
            failures.push(format!(
                "second {t}: {differ} documents differ from the writer's log ({} restored, {} expected)",
                got.docs.len(),
                want.docs.len()
            ));
        }
        fs::remove_dir_all(&target)?;
    }
    Ok((exact, failures))
}

/// What the bench needs to run a repository.
struct Ctx {
    bin: PathBuf,
    base: PathBuf,
    args: Args,
}

/// The rate of a step (`None`: as fast as the writer goes).
fn step_rate(s: &str) -> Result<Option<u64>> {
    if s.trim() == "max" {
        return Ok(None);
    }
    Ok(Some(
        s.trim().parse().with_context(|| format!("--steps: {s}"))?,
    ))
}

/// The run of idle, steady and steps on one repository.
fn follow(ctx: &Ctx, repo: &Repo) -> Result<(Value, Vec<String>)> {
    let args = &ctx.args;
    let kind = repo.kind;
    let data = ctx.base.join(format!("{kind}-follow-data"));
    let writer = Writer::start(&data, None);
    let archiver = Archiver::start(
        &ctx.bin,
        repo,
        &data,
        &ctx.base.join(format!("{kind}-follow-archiver.log")),
    )?;
    ensure!(
        archiver.wait_for(60, |e| e["event"] == "base"),
        "{kind}: the first snapshot was not stored as a base"
    );
    let store = repo.open()?;
    let steps: Vec<Option<u64>> = args
        .steps
        .iter()
        .map(|s| step_rate(s))
        .collect::<Result<_>>()?;
    let span = args.idle_seconds + args.seconds + args.step_seconds * steps.len() as u64;
    let mut rng = args.seed;
    let first = now_secs() + 1;
    writer.want_random(first, first + span, args.checks, &mut rng);
    let stretch = |name: &str, secs: u64| -> Result<Stretch> {
        let s = measure(name, secs, &archiver, &store, &writer, &data)?;
        println!(
            "[{kind}] {:<16} {:>8.0} frames/s {:>6.2} MB/s  recovery point median {:.2} s, p95 {:.2} s, max {:.2} s  CPU {:.1}%  RSS {:.1} MiB",
            s.name,
            s.frames_per_sec(),
            s.mb_per_sec(),
            median(s.rp.clone()),
            percentile(&s.rp, 95.0),
            max_of(&s.rp),
            s.cpu_percent,
            s.rss_max_kib as f64 / 1024.0
        );
        Ok(s)
    };
    let mut idle = stretch("idle", args.idle_seconds)?;
    writer.set_rate(args.rate);
    let mut busy = stretch(&format!("steady {}/s", args.rate), args.seconds)?;
    let mut stepped = Vec::new();
    for step in &steps {
        writer.snapshot();
        writer.set_rate(step.unwrap_or(FLAT_OUT));
        let name = step.map_or("step max".to_string(), |s| format!("step {s}/s"));
        stepped.push(stretch(&name, args.step_seconds)?);
    }
    let (last_second, last_seq) = writer.pause();
    let drained = drain(&store, last_seq, 600)?;
    settle(last_second);
    let (events, report) = archiver.stop(&ctx.base.join(format!("{kind}-follow-events.jsonl")))?;
    let expected = writer.finish();
    for s in [&mut idle, &mut busy].into_iter().chain(stepped.iter_mut()) {
        s.fill_from(&events);
    }
    let scratch = ctx.base.join(format!("{kind}-follow-restores"));
    let (exact, failures) = check(&ctx.bin, repo, &scratch, &expected)?;
    let highest = stepped
        .iter()
        .zip(&steps)
        .rev()
        .find(|(s, _)| s.followed())
        .map(|(s, r)| json!({"step": r.map_or("max".to_string(), |r| r.to_string()), "frames_per_sec": s.frames_per_sec()}));
    let doc = json!({
        "repository": repo.arg,
        "idle": idle.json(),
        "busy": busy.json(),
        "steps": stepped.iter().zip(&steps).map(|(s, r)| {
            let mut v = s.json();
            v["target_frames_per_sec"] = json!(r);
            v["followed"] = json!(s.followed());
            v
        }).collect::<Vec<_>>(),
        "highest_step_followed": highest,
        "drained_after_writes_stopped_seconds": drained,
        "final_report": report,
        "checked_seconds": exact,
        "check_failures": failures,
    });
    Ok((doc, failures))
}

/// The objects under `archive/` by kind, and a month of them extrapolated from the soak.
fn objects_and_month(keys: &BTreeSet<String>, report: &Value, secs: f64, every: u64) -> Value {
    let mut by_level: BTreeMap<u8, u64> = BTreeMap::new();
    let (mut bases, mut chunks, mut observed, mut other) = (0u64, 0u64, 0u64, 0u64);
    for key in keys {
        let parts: Vec<&str> = key.splitn(4, '/').collect();
        match (parts.get(2), parts.get(3)) {
            (Some(&"wal"), Some(name)) => match PieceName::parse(name) {
                Some(p) => *by_level.entry(p.level).or_default() += 1,
                None => other += 1,
            },
            (Some(&"bases"), _) => bases += 1,
            (Some(&"chunks"), _) => chunks += 1,
            (Some(&"observed.json"), None) => observed += 1,
            _ => other += 1,
        }
    }
    let pieces = report["pieces"].as_u64().unwrap_or(0);
    let bytes = report["bytes"].as_u64().unwrap_or(0);
    // Level-0 pieces at the measured rate. A merge takes `fan_in` consecutive pieces of a
    // level, or fewer once they reach the archiver's merge limit (32 MiB), into one of the
    // next level; the top level (where fewer than two would fit) grows, each level below it
    // keeps fewer than a merge's worth.
    let per_sec = pieces as f64 / secs;
    let piece_bytes = bytes.checked_div(pieces).map_or(0, |b| b + PIECE_OVERHEAD);
    let fan = MERGE_FAN_IN as f64;
    let (mut size, mut top, mut below) = (piece_bytes as f64, 0i32, 0.0);
    while size > 0.0 && top < 8 {
        let k = fan.min((MERGE_LIMIT as f64 / size).floor());
        if k < 2.0 {
            break;
        }
        below += k - 1.0;
        size *= k;
        top += 1;
    }
    let month_pieces = if size > 0.0 {
        MONTH_SECS * per_sec * piece_bytes as f64 / size + below
    } else {
        0.0
    };
    let month_bases = MONTH_SECS / every as f64 + 1.0;
    let chunks_per_base = if bases == 0 {
        0.0
    } else {
        chunks as f64 / bases as f64
    };
    let month_chunks = month_bases * chunks_per_base;
    json!({
        "objects_left": {
            "total": keys.len(),
            "pieces_by_level": by_level,
            "bases": bases,
            "chunks": chunks,
            "observed_json": observed,
            "other": other,
        },
        "month": {
            "formula": "pieces = month_s * pieces_per_s * level0_piece_bytes / top_level_piece_bytes + (pieces left below the top level), a merge taking fan_in pieces or fewer up to 32 MiB; bases = month_s / snapshot_every_s + 1 (the --soak-snapshot-every cadence); chunks = bases * chunks_left / bases_left; objects = pieces + bases + chunks + 1 (observed.json); no prune, writing all month at the soak's rate",
            "pieces_per_second": per_sec,
            "level0_piece_bytes": piece_bytes,
            "top_level": top,
            "top_level_piece_bytes": size,
            "pieces": month_pieces,
            "bases": month_bases,
            "chunks": month_chunks,
            "objects": month_pieces + month_bases + month_chunks + 1.0,
        },
    })
}

/// The soak on a new data dir and repository: every archiver default, merging included.
fn soak(ctx: &Ctx, repo: &Repo) -> Result<(Value, Vec<String>)> {
    let args = &ctx.args;
    let kind = repo.kind;
    let secs = args.soak_minutes * 60;
    let every = args.soak_snapshot_every.min(secs / 3).max(1);
    let data = ctx.base.join(format!("{kind}-soak-data"));
    let writer = Writer::start(&data, Some(every));
    let archiver = Archiver::start(
        &ctx.bin,
        repo,
        &data,
        &ctx.base.join(format!("{kind}-soak-archiver.log")),
    )?;
    let store = repo.open()?;
    let mut rng = args.seed ^ 0x5eed;
    let first = now_secs() + 1;
    writer.want_random(first, first + secs, args.checks, &mut rng);
    writer.set_rate(args.soak_rate);
    let (start, soak_started) = (Instant::now(), unix_now());
    for minute in 1..=args.soak_minutes {
        let until = start + Duration::from_secs(minute * 60);
        if let Some(d) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let events = archiver.events();
        let last = events.iter().rev().find(|(_, e)| e["event"] == "status");
        println!(
            "[{kind} soak] {minute}/{} min: {} pieces written, {} merges, {} objects under archive/",
            args.soak_minutes,
            last.map_or(json!(0), |(_, e)| e["pieces"].clone()),
            events.iter().filter(|(_, e)| e["event"] == "merged").count(),
            archive_keys(&store)?.len()
        );
    }
    let soak_secs = unix_now() - soak_started;
    let (last_second, last_seq) = writer.pause();
    drain(&store, last_seq, 300)?;
    settle(last_second);
    let (events, report) = archiver.stop(&ctx.base.join(format!("{kind}-soak-events.jsonl")))?;
    let expected = writer.finish();
    let objects = objects_and_month(
        &archive_keys(&store)?,
        &report,
        soak_secs,
        args.soak_snapshot_every,
    );
    let status: Vec<&(f64, Value)> = events
        .iter()
        .filter(|(_, e)| e["event"] == "status")
        .collect();
    let requests_per_hour = match (status.first(), status.last()) {
        (Some((t0, a)), Some((t1, b))) if t1 > t0 => Some(
            b["requests"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(a["requests"].as_u64().unwrap_or(0)) as f64
                / (t1 - t0)
                * 3600.0,
        ),
        _ => None,
    };
    let scratch = ctx.base.join(format!("{kind}-soak-restores"));
    let (exact, failures) = check(&ctx.bin, repo, &scratch, &expected)?;
    let doc = json!({
        "repository": repo.arg,
        "minutes": args.soak_minutes,
        "frames_per_sec": report["frames"].as_u64().unwrap_or(0) as f64 / soak_secs,
        "snapshot_every_seconds": every,
        "pieces_written": report["pieces"],
        "frames_stored": report["frames"],
        "bytes_stored": report["bytes"],
        "merges": events.iter().filter(|(_, e)| e["event"] == "merged").count(),
        "bases_stored": report["bases"],
        "objects_left": objects["objects_left"],
        "requests_per_hour": requests_per_hour,
        "month": objects["month"],
        "final_report": report,
        "checked_seconds": exact,
        "check_failures": failures,
    });
    Ok((doc, failures))
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.digits$}"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The idle and busy figures and the steps of one repository.
fn print_follow(kind: &str, run: &Value) {
    println!();
    println!("== {kind}: {} ==", run["repository"].as_str().unwrap_or(""));
    let (idle, busy) = (&run["idle"], &run["busy"]);
    let rp = &busy["recovery_point"];
    println!(
        "recovery point, steady {:.0} frames/s ({:.2} MB/s) for {:.0} s: median {:.2} s, p95 {:.2} s, max {:.2} s ({} samples, the longest listing {:.3} s)",
        num(&busy["frames_per_sec"]),
        num(&busy["mb_per_sec"]),
        num(&busy["seconds"]),
        num(&rp["median"]),
        num(&rp["p95"]),
        num(&rp["max"]),
        rp["samples"],
        num(&rp["longest_listing_seconds"])
    );
    println!("{:<34} {:>16} {:>16}", "", "idle", "busy");
    let row = |name: &str, show: &dyn Fn(&Value) -> String| {
        println!("{name:<34} {:>16} {:>16}", show(idle), show(busy));
    };
    row("seconds", &|v| format!("{:.0}", num(&v["seconds"])));
    row("archiver CPU, % of one core", &|v| {
        format!("{:.2}", num(&v["cpu_percent_of_one_core"]))
    });
    row("VmRSS max / VmHWM, MiB", &|v| {
        format!(
            "{:.1} / {:.1}",
            num(&v["vm_rss_max_kib"]) / 1024.0,
            num(&v["vm_hwm_kib"]) / 1024.0
        )
    });
    row("requests per hour (window s)", &|v| {
        format!(
            "{} ({})",
            fmt_opt(v["requests_per_hour"].as_f64(), 0),
            fmt_opt(v["requests_window_seconds"].as_f64(), 0)
        )
    });
    row("objects created (per hour)", &|v| {
        format!(
            "{} ({:.0})",
            v["objects_created"],
            num(&v["objects_created_per_hour"])
        )
    });
    row("recovery point median / max, s", &|v| {
        format!(
            "{:.2} / {:.2}",
            num(&v["recovery_point"]["median"]),
            num(&v["recovery_point"]["max"])
        )
    });
    print_steps(run);
    let steps = run["steps"].as_array().map_or(&[][..], Vec::as_slice);
    if steps
        .last()
        .is_some_and(|s| s["target_frames_per_sec"].is_null() && s["followed"] == true)
    {
        println!(
            "  (it kept up with the writer flat out: the writer, not the archiver, was the limit)"
        );
    }
    println!(
        "restored exactly: seconds {}; failures: {}",
        run["checked_seconds"],
        run["check_failures"].as_array().map_or(0, Vec::len)
    );
}

/// The table of the rate steps of one repository.
fn print_steps(run: &Value) {
    println!(
        "{:>8} {:>10} {:>7} {:>6} {:>11} {:>7} {:>7} {:>7} {:>6} {:>8}",
        "step",
        "frames/s",
        "MB/s",
        "lag s",
        "pending MB",
        "RP med",
        "RP p95",
        "RP max",
        "CPU%",
        "followed"
    );
    for s in run["steps"].as_array().into_iter().flatten() {
        let rp = &s["recovery_point"];
        println!(
            "{:>8} {:>10.0} {:>7.2} {:>6} {:>11} {:>7.2} {:>7.2} {:>7.2} {:>6.1} {:>8}",
            s["target_frames_per_sec"]
                .as_u64()
                .map_or("max".to_string(), |r| r.to_string()),
            num(&s["frames_per_sec"]),
            num(&s["mb_per_sec"]),
            s["lag_seconds_max"]
                .as_u64()
                .map_or("n/a".to_string(), |l| l.to_string()),
            fmt_opt(s["pending_bytes_max"].as_f64().map(|b| b / 1e6), 2),
            num(&rp["median"]),
            num(&rp["p95"]),
            num(&rp["max"]),
            num(&s["cpu_percent_of_one_core"]),
            if s["followed"] == true { "yes" } else { "no" }
        );
    }
    match run["highest_step_followed"].as_object() {
        Some(h) => println!(
            "highest step followed: {} ({:.0} frames/s written); the archive held the last frame {:.2} s after the writes stopped",
            h["step"].as_str().unwrap_or(""),
            num(&h["frames_per_sec"]),
            num(&run["drained_after_writes_stopped_seconds"])
        ),
        None => println!("highest step followed: none"),
    }
}

/// The soak's objects and month of one repository.
fn print_soak(soak: &Value) {
    let (left, month) = (&soak["objects_left"], &soak["month"]);
    println!(
        "soak {} min at {:.0} frames/s, a snapshot every {} s, merges every 60 s of 60: {} pieces written, {} merges, {} bases stored; requests per hour {}",
        soak["minutes"],
        num(&soak["frames_per_sec"]),
        soak["snapshot_every_seconds"],
        soak["pieces_written"],
        soak["merges"],
        soak["bases_stored"],
        fmt_opt(soak["requests_per_hour"].as_f64(), 0)
    );
    println!(
        "  objects left under archive/: {} = pieces {} + bases {} + chunks {} + observed.json {} + other {}",
        left["total"],
        left["pieces_by_level"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(level, n)| format!("{n} of level {level}"))
            .collect::<Vec<_>>()
            .join(", "),
        left["bases"],
        left["chunks"],
        left["observed_json"],
        left["other"]
    );
    println!(
        "  a month of it (30 days, no prune): {:.0} objects = {:.0} pieces (level {}, {:.1} MB each) + {:.0} bases + {:.0} chunks + 1",
        num(&month["objects"]),
        num(&month["pieces"]),
        month["top_level"],
        num(&month["top_level_piece_bytes"]) / 1e6,
        num(&month["bases"]),
        num(&month["chunks"])
    );
    println!("  formula: {}", month["formula"].as_str().unwrap_or(""));
    println!(
        "  restored exactly: seconds {}; failures: {}",
        soak["checked_seconds"],
        soak["check_failures"].as_array().map_or(0, Vec::len)
    );
}

/// Runs the benchmark; see the module documentation.
pub(crate) fn run(args: Args) -> Result<()> {
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| root().join("target/bench-archive"));
    let bin = build_binary(true)?;
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;
    let server = if args.s3 {
        let s = Moto::start(&base, &args.server)?;
        s.create_bucket("bench")?;
        Some(s)
    } else {
        None
    };
    let repos = |what: &str| {
        let mut v = vec![Repo::local(&base.join(format!("local-{what}-repo")))];
        if let Some(s) = &server {
            v.push(Repo::bucket(&s.endpoint(), "bench", what, &base));
        }
        v
    };
    let started = Instant::now();
    let ctx = Ctx {
        bin,
        base: base.clone(),
        args,
    };
    let mut failures = Vec::new();
    let mut follows = serde_json::Map::new();
    for repo in repos("follow") {
        let (doc, f) = follow(&ctx, &repo)?;
        failures.extend(f.into_iter().map(|f| format!("{} follow: {f}", repo.kind)));
        follows.insert(repo.kind.to_string(), doc);
    }
    let mut soaks = serde_json::Map::new();
    if ctx.args.soak_minutes > 0 {
        let repos = repos("soak");
        let results: Vec<Result<(Value, Vec<String>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = repos
                .iter()
                .map(|repo| scope.spawn(|| soak(&ctx, repo)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("the soak panicked")))
                .collect()
        });
        for (repo, result) in repos.iter().zip(results) {
            let (doc, f) = result?;
            failures.extend(f.into_iter().map(|f| format!("{} soak: {f}", repo.kind)));
            soaks.insert(repo.kind.to_string(), doc);
        }
    }
    let a = &ctx.args;
    println!();
    println!(
        "archive --interval 1s (release build); writer: dimension {DIMENSION}, {KEYS} documents, an update and a delete in every 10 frames, a segment per {ROTATE_EVERY} frames (xtask {} build); {} s in all",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        started.elapsed().as_secs()
    );
    if cfg!(debug_assertions) {
        println!("(the writer runs in this process: `cargo run --release -p xtask -- bench-archive` writes about 1.7x faster flat out)");
    }
    for (kind, run) in &follows {
        print_follow(kind, run);
        if let Some(s) = soaks.get(kind) {
            print_soak(s);
        }
    }
    let doc = json!({
        "settings": {
            "interval_seconds": INTERVAL,
            "dimension": DIMENSION,
            "documents": KEYS,
            "rate": a.rate,
            "seconds": a.seconds,
            "idle_seconds": a.idle_seconds,
            "steps": a.steps,
            "step_seconds": a.step_seconds,
            "soak_minutes": a.soak_minutes,
            "soak_rate": a.soak_rate,
            "checks": a.checks,
            "seed": a.seed,
            "server": server.as_ref().map(|_| a.server.clone()),
            "xtask_build": if cfg!(debug_assertions) { "debug" } else { "release" },
        },
        "follow": follows,
        "soak": soaks,
    });
    println!();
    println!("{}", serde_json::to_string_pretty(&doc)?);
    drop(server);
    ensure!(
        failures.is_empty(),
        "the archive did not restore as written:\n{}",
        failures.join("\n")
    );
    Ok(())
}
