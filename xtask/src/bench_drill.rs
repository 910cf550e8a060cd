//! The last section of `cargo xtask bench`: restore against `cp -r && sync` at one or more
//! sizes, what recording golden queries adds to `create`, and the phases of a restore drill.
//!
//! 1. Restore vs copy. For each size of `--restore-sizes` (GB; `1` is the bench's own data dir,
//!    any other G a data dir of G x 600,000 vectors made here and deleted afterwards; the free
//!    disk space is checked before the bench starts and again before each size), one full
//!    backup, then warm (one untimed pair first, caches kept) and cold (caches dropped before
//!    each timed command) `--restore-pairs` pairs of a `restore` into a directory that does not
//!    exist and a `cp -r DATA OUT`, each followed by `sync`. Before each command the previous
//!    output is removed and `sync` runs, untimed, so at most one output is on disk at a time
//!    (data + repository + one output). It reports the median of the per-pair ratios restore/cp
//!    and their range, the median seconds of each and the restore rate in MB/s.
//! 2. Golden queries at backup time: paired rounds of `create` and `create --golden 100` into
//!    fresh repositories, warm and cold, `--restore-pairs` pairs each; the median seconds of
//!    each and the median per-pair difference.
//! 3. A drill: `drill --format json --scratch DIR` on the repository whose newest backup is the
//!    `--golden 100` one, warm and cold, three runs each; the median of each phase from its JSON.
//!    A drill that does not report `"passed": true` fails the bench.
//!
//! Parts 2 and 3 are skipped, with a message and no numbers, when the binary has no `drill`
//! command or `create` has no `--golden`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::bench::{can_drop_caches, quoted, time_shell, Sample, CACHE_STATES};
use crate::gen_data;
use crate::util::{drop_caches, du, median};

/// Vectors of dimension 384 in 1 GB of generated data dir.
const VECTORS_PER_GB: f64 = 600_000.0;

/// The fewest pairs per row of parts 1 and 2.
const MIN_PAIRS: u64 = 5;

/// The golden queries `create --golden` records in part 2.
const GOLDEN_QUERIES: u32 = 100;

/// Timed drill runs per cache state.
const DRILL_RUNS: usize = 3;

/// Bytes a generated vector takes in the snapshot (384 `f32`s and its record around them).
const SNAPSHOT_BYTES_PER_VECTOR: u64 = 384 * 4 + 32;

/// Bytes of the WAL segments `gen-data` writes by default (4 of 16 MiB).
const WAL_BYTES: u64 = 64 << 20;

/// What the section needs from `bench`'s arguments.
pub(crate) struct Options {
    /// `--restore-sizes`, in GB.
    pub(crate) sizes: Vec<f64>,
    /// `--restore-pairs`.
    pub(crate) pairs: u64,
    /// `--vectors`: the size of the bench's data dir.
    pub(crate) vectors: u64,
}

/// Parses one entry of `--restore-sizes`: a positive number of GB.
pub(crate) fn parse_gb(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(gb) if gb.is_finite() && gb > 0.0 => Ok(gb),
        _ => Err(format!("`{s}` is not a positive number of GB")),
    }
}

/// The vectors of a generated data dir of `gb` GB.
fn vectors_for(gb: f64) -> u64 {
    (gb * VECTORS_PER_GB).round().max(1.0) as u64
}

/// The bytes of a data dir that `gen-data` writes with `n` vectors and its default WAL.
fn data_bytes(n: u64) -> u64 {
    n * SNAPSHOT_BYTES_PER_VECTOR + WAL_BYTES
}

/// Whether size `gb` is measured on the bench's data dir (of `vectors` vectors) rather than on
/// one of its own.
fn reuses(gb: f64, vectors: u64) -> bool {
    let n = vectors_for(gb);
    n == vectors_for(1.0) || n == vectors
}

/// Before the bench writes anything in `base`: fails when its disk cannot hold, besides the
/// bench's data dir, what the largest size of `--restore-sizes` needs (see `check_space`).
pub(crate) fn preflight(base: &Path, opts: &Options) -> Result<()> {
    let own = data_bytes(opts.vectors);
    for &gb in &opts.sizes {
        if reuses(gb, opts.vectors) {
            check_space(
                base,
                3 * own,
                gb,
                "the data dir, a repository and one restored copy",
            )?;
        } else {
            check_space(
                base,
                own + 3 * data_bytes(vectors_for(gb)),
                gb,
                "the bench's data dir, and for this size a data dir, a repository and one restored copy",
            )?;
        }
    }
    Ok(())
}

/// Removes a directory tree if it is there.
fn remove(path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Flushes every dirty page, so the next timed `sync` flushes only what its command wrote.
fn sync() {
    let _ = Command::new("sync").status();
}

/// Drops caches when `cold`, then times `cmd` (ending with its own `sync`).
fn timed(cmd: &str, cold: bool) -> Result<Sample> {
    if cold {
        drop_caches();
    }
    time_shell(cmd, false)
}

/// The smallest and largest of `v`.
fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Bytes available to an unprivileged writer on the file system of `path`, from `df -Pk`.
fn available_bytes(path: &Path) -> Result<u64> {
    let out = Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .context("running df")?;
    ensure!(out.status.success(), "df -Pk {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("unexpected df output: {text:?}"))?;
    Ok(kib * 1024)
}

/// A data dir generated for one size, deleted when dropped (also when the bench fails).
struct Generated(PathBuf);

impl Drop for Generated {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs the section in `<base>/drill` (see the module documentation); `data` is the bench's
/// data dir.
pub(crate) fn run(bin: &Path, base: &Path, data: &Path, opts: &Options) -> Result<()> {
    let pairs = opts.pairs.max(MIN_PAIRS);
    if pairs != opts.pairs {
        println!("--restore-pairs {} raised to {pairs}", opts.pairs);
    }
    // The encrypted-vs-plain comparison's copies and repositories are not needed any more;
    // the largest size needs the disk.
    remove(&base.join("enc"))?;
    let dir = base.join("drill");
    remove(&dir)?;
    fs::create_dir_all(&dir)?;
    let cold_note = if can_drop_caches() {
        "caches dropped before each timed command"
    } else {
        "caches could NOT be dropped (not root?): cold runs are not cold"
    };
    println!();
    println!(
        "restore vs cp -r && sync: {pairs} pairs (restore, cp) per row, each into a dir that does not exist, each followed by sync"
    );
    println!("warm: one untimed pair first, caches kept; cold: {cold_note}");
    let mut rows = Vec::new();
    for &gb in &opts.sizes {
        let generated = if reuses(gb, opts.vectors) {
            check_space(&dir, 2 * du(data), gb, "a repository and one restored copy")?;
            None
        } else {
            let n = vectors_for(gb);
            let own = dir.join(format!("data-{gb}gb"));
            check_space(
                &dir,
                3 * data_bytes(n),
                gb,
                "a data dir, a repository and one restored copy",
            )?;
            gen_data::run(gen_data::Args::new(own.clone(), n))?;
            Some(Generated(own))
        };
        let d = generated.as_ref().map_or(data, |g| g.0.as_path());
        // Dropped (outputs and repository removed) before `generated`, also on an error.
        let rc = RestoreVsCp::new(bin, &dir, d)?;
        for (cold, state) in CACHE_STATES {
            rows.push(rc.row(gb, cold, state, pairs)?);
        }
    }
    print_restore_rows(&rows);
    println!();
    if let Err(why) = drill_support(bin) {
        println!(
            "SKIPPED: the golden-query cost of create and the drill phases: {why}; no numbers for them"
        );
        return remove(&dir);
    }
    let repo = golden_cost(bin, &dir, data, pairs)?;
    println!();
    drill_phases(bin, &dir, &repo)?;
    remove(&dir)
}

/// Fails with a clear message when the file system of `dir` has less than `need` bytes free,
/// with a tenth more as margin; `what` says what the bytes are for. A repository of random
/// vectors is about as large as the data dir.
fn check_space(dir: &Path, need: u64, gb: f64, what: &str) -> Result<()> {
    let need = need + need / 10;
    let free = available_bytes(dir)?;
    if free < need {
        bail!(
            "not enough disk for --restore-sizes {gb}: {what} need about {:.1} GB free in {}, but only {:.1} GB are available; free space, point --dir at a larger disk, or leave {gb} out of --restore-sizes",
            need as f64 / 1e9,
            dir.display(),
            free as f64 / 1e9
        );
    }
    Ok(())
}

// Part 1: restore vs copy.

/// The paths of one size's comparison and its backup's id.
struct RestoreVsCp {
    bin: PathBuf,
    data: PathBuf,
    /// Bytes of the data dir.
    size: u64,
    repo: PathBuf,
    /// Where `restore` writes.
    restored: PathBuf,
    /// Where `cp -r` writes.
    copy: PathBuf,
    /// The full backup's id.
    id: String,
}

/// The timed pairs of one size in one cache state.
struct RestoreRow {
    /// `--restore-sizes` entry.
    gb: f64,
    /// Bytes of the data dir.
    size: u64,
    /// `warm` or `cold`.
    state: &'static str,
    /// (restore, cp) per pair.
    pairs: Vec<(Sample, Sample)>,
}

impl RestoreVsCp {
    /// Makes the one full backup of `data` (untimed) in `<dir>/repo`.
    fn new(bin: &Path, dir: &Path, data: &Path) -> Result<Self> {
        let repo = dir.join("repo");
        remove(&repo)?;
        let out = Command::new(bin)
            .args(["-q", "--format", "json", "--data-dir"])
            .arg(data)
            .arg("--backup-dir")
            .arg(&repo)
            .arg("create")
            .output()
            .context("running kyrodb_backup create")?;
        ensure!(
            out.status.success(),
            "create of {} failed: {}",
            data.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).context("create printed no JSON")?;
        let id = v["id"]
            .as_str()
            .context("create printed no backup id")?
            .to_string();
        Ok(Self {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            size: du(data),
            restored: dir.join("restored"),
            copy: dir.join("copy"),
            repo,
            id,
        })
    }

    /// Untimed: removes both outputs, then `sync`.
    fn clear(&self) -> Result<()> {
        remove(&self.restored)?;
        remove(&self.copy)?;
        sync();
        Ok(())
    }

    /// One pair: restore, then cp.
    fn pair(&self, cold: bool) -> Result<(Sample, Sample)> {
        self.clear()?;
        let restore = timed(
            &format!(
                "{} -q --backup-dir {} --data-dir {} restore --backup-id {} && sync",
                quoted(&self.bin),
                quoted(&self.repo),
                quoted(&self.restored),
                self.id
            ),
            cold,
        )?;
        self.clear()?;
        let cp = timed(
            &format!(
                "cp -r {} {} && sync",
                quoted(&self.data),
                quoted(&self.copy)
            ),
            cold,
        )?;
        Ok((restore, cp))
    }

    /// `pairs` timed pairs in one cache state; warm ones after one untimed pair.
    fn row(&self, gb: f64, cold: bool, state: &'static str, pairs: u64) -> Result<RestoreRow> {
        if !cold {
            self.pair(false)?;
        }
        let mut done = Vec::new();
        for i in 0..pairs {
            let (r, c) = self.pair(cold)?;
            println!(
                "restore vs cp {gb} GB {state} pair {}: restore {:.2}s cp {:.2}s ({:.3}x)",
                i + 1,
                r.secs,
                c.secs,
                r.secs / c.secs
            );
            done.push((r, c));
        }
        Ok(RestoreRow {
            gb,
            size: self.size,
            state,
            pairs: done,
        })
    }
}

impl Drop for RestoreVsCp {
    /// Removes the outputs and the repository, so the next size has the disk.
    fn drop(&mut self) {
        for dir in [&self.restored, &self.copy, &self.repo] {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Prints the table of part 1.
fn print_restore_rows(rows: &[RestoreRow]) {
    println!(
        "size: the --restore-sizes entry (1: the bench's data dir), data GB: its data dir's bytes; restore/cp: median per-pair ratio (min, max: its range)"
    );
    println!(
        "seconds: medians; MB/s: the data dir's bytes / median seconds; RSS: largest peak of restore"
    );
    println!(
        "{:<8} {:>8} {:<5} {:>10} {:>6} {:>6} {:>9} {:>6} {:>12} {:>8} {:>11}",
        "size",
        "data GB",
        "cache",
        "restore/cp",
        "min",
        "max",
        "restore s",
        "cp s",
        "restore MB/s",
        "cp MB/s",
        "RSS restore"
    );
    for row in rows {
        let ratios: Vec<f64> = row.pairs.iter().map(|(r, c)| r.secs / c.secs).collect();
        let (lo, hi) = range(&ratios);
        let restore = median(row.pairs.iter().map(|(r, _)| r.secs).collect());
        let cp = median(row.pairs.iter().map(|(_, c)| c.secs).collect());
        let rss = row.pairs.iter().map(|(r, _)| r.rss).max().unwrap_or(0);
        let mb = row.size as f64 / 1e6;
        println!(
            "{:<8} {:>8.2} {:<5} {:>10.3} {:>6.3} {:>6.3} {:>9.2} {:>6.2} {:>12.0} {:>8.0} {:>7} MiB",
            format!("{} GB", row.gb),
            row.size as f64 / 1e9,
            row.state,
            median(ratios),
            lo,
            hi,
            restore,
            cp,
            mb / restore,
            mb / cp,
            rss / 1024
        );
    }
}

// Parts 2 and 3: golden queries and the drill, when the binary has them.

/// `Ok` when the binary has `drill` and `create --golden`; otherwise why not.
fn drill_support(bin: &Path) -> Result<(), String> {
    let help = |args: &[&str]| {
        Command::new(bin)
            .args(args)
            .output()
            .map_err(|e| format!("could not run {}: {e}", bin.display()))
    };
    let drill = help(&["drill", "--help"])?;
    if !drill.status.success() {
        let stderr = String::from_utf8_lossy(&drill.stderr);
        return Err(format!(
            "`kyrodb_backup drill --help` failed ({}: {}), this binary has no drill command yet",
            drill.status,
            stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
        ));
    }
    let create = help(&["create", "--help"])?;
    if !String::from_utf8_lossy(&create.stdout).contains("--golden") {
        return Err("`kyrodb_backup create --help` lists no --golden".to_string());
    }
    Ok(())
}

/// Part 2: paired `create` and `create --golden 100` into fresh repositories on `data`, warm
/// and cold; returns the repository that keeps the last `--golden` backup, for the drill.
fn golden_cost(bin: &Path, dir: &Path, data: &Path, pairs: u64) -> Result<PathBuf> {
    let plain = dir.join("create");
    let golden = dir.join("create-golden");
    let command = |repo: &Path, extra: &str| {
        format!(
            "{} -q --format json --data-dir {} --backup-dir {} create{extra} && sync",
            quoted(bin),
            quoted(data),
            quoted(repo)
        )
    };
    let (plain_cmd, golden_cmd) = (
        command(&plain, ""),
        command(&golden, &format!(" --golden {GOLDEN_QUERIES}")),
    );
    let round = |cold: bool| -> Result<(f64, f64)> {
        remove(&plain)?;
        remove(&golden)?;
        sync();
        let a = timed(&plain_cmd, cold)?;
        remove(&plain)?;
        sync();
        let b = timed(&golden_cmd, cold)?;
        Ok((a.secs, b.secs))
    };
    println!(
        "create vs create --golden {GOLDEN_QUERIES} on the {:.2} GB data dir: {pairs} pairs per row, each into a fresh repository, each followed by sync",
        du(data) as f64 / 1e9
    );
    let mut rows = Vec::new();
    for (cold, state) in CACHE_STATES {
        if !cold {
            round(false)?;
        }
        let mut done = Vec::new();
        for i in 0..pairs {
            let (a, b) = round(cold)?;
            println!(
                "golden cost {state} pair {}: create {a:.2}s create --golden {b:.2}s ({:+.2}s)",
                i + 1,
                b - a
            );
            done.push((a, b));
        }
        rows.push((state, done));
    }
    println!(
        "diff: median per-pair (create --golden) - create, its range, and the median per-pair diff as % of that pair's create"
    );
    println!(
        "{:<5} {:>8} {:>10} {:>7} {:>7} {:>7} {:>7}",
        "cache", "create s", "+golden s", "diff s", "min", "max", "diff %"
    );
    for (state, done) in &rows {
        let diffs: Vec<f64> = done.iter().map(|(a, b)| b - a).collect();
        let (lo, hi) = range(&diffs);
        println!(
            "{:<5} {:>8.2} {:>10.2} {:>7.2} {:>7.2} {:>7.2} {:>6.1}%",
            state,
            median(done.iter().map(|p| p.0).collect()),
            median(done.iter().map(|p| p.1).collect()),
            median(diffs),
            lo,
            hi,
            median(done.iter().map(|(a, b)| (b - a) / a * 100.0).collect())
        );
    }
    remove(&plain)?;
    Ok(golden)
}

/// The JSON fields of `drill --format json` the bench reports, in order: (path, label).
const DRILL_FIELDS: [(&str, &str); 6] = [
    ("/phases/restore_seconds", "restore s"),
    ("/phases/check_seconds", "check s"),
    ("/phases/golden_seconds", "golden s"),
    ("/phases/cleanup_seconds", "cleanup s"),
    ("/phases/total_seconds", "total s"),
    ("/restore_mb_per_s", "restore MB/s"),
];

/// One drill run: wall seconds, peak RSS in KiB, and the `DRILL_FIELDS` values.
struct DrillRun {
    wall: f64,
    rss: u64,
    fields: [f64; DRILL_FIELDS.len()],
}

/// Part 3: `drill` on `repo`, warm (after one untimed run) and cold, `DRILL_RUNS` each.
fn drill_phases(bin: &Path, dir: &Path, repo: &Path) -> Result<()> {
    let scratch = dir.join("scratch");
    let cmd = format!(
        "{} --backup-dir {} drill --format json --scratch {}",
        quoted(bin),
        quoted(repo),
        quoted(&scratch)
    );
    let once = |cold: bool| -> Result<DrillRun> {
        remove(&scratch)?;
        fs::create_dir_all(&scratch)?;
        sync();
        let s = timed(&cmd, cold)?;
        let v: Value = serde_json::from_str(&s.stdout)
            .with_context(|| format!("drill printed no JSON: {:?}", s.stdout))?;
        ensure!(
            v["passed"].as_bool() == Some(true),
            "the drill did not pass (\"passed\": {}): {}",
            v["passed"],
            s.stdout.trim()
        );
        let mut fields = [0.0; DRILL_FIELDS.len()];
        for (f, (path, _)) in fields.iter_mut().zip(DRILL_FIELDS) {
            *f = v
                .pointer(path)
                .and_then(Value::as_f64)
                .with_context(|| format!("drill JSON has no number at {path}: {}", s.stdout))?;
        }
        Ok(DrillRun {
            wall: s.secs,
            rss: s.rss,
            fields,
        })
    };
    println!(
        "drill --format json --scratch DIR on the repository of the last create --golden {GOLDEN_QUERIES}: {DRILL_RUNS} runs per row, each must report \"passed\": true"
    );
    let mut rows = Vec::new();
    for (cold, state) in CACHE_STATES {
        if !cold {
            once(false)?;
        }
        let mut runs = Vec::new();
        for i in 0..DRILL_RUNS {
            let r = once(cold)?;
            println!(
                "drill {state} run {}: {:.2}s wall, {}",
                i + 1,
                r.wall,
                DRILL_FIELDS
                    .iter()
                    .zip(r.fields)
                    .map(|((_, label), x)| format!("{label} {x:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            runs.push(r);
        }
        rows.push((state, runs));
    }
    remove(&scratch)?;
    println!("medians of {DRILL_RUNS} runs (phases from the drill's JSON); RSS: largest peak");
    print!("{:<5} {:>7}", "cache", "wall s");
    for (_, label) in DRILL_FIELDS {
        print!(" {label:>12}");
    }
    println!(" {:>9}", "RSS");
    for (state, runs) in &rows {
        print!(
            "{state:<5} {:>7.2}",
            median(runs.iter().map(|r| r.wall).collect())
        );
        for k in 0..DRILL_FIELDS.len() {
            print!(
                " {:>12.2}",
                median(runs.iter().map(|r| r.fields[k]).collect())
            );
        }
        println!(
            " {:>5} MiB",
            runs.iter().map(|r| r.rss).max().unwrap_or(0) / 1024
        );
    }
    Ok(())
}
