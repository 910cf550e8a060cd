//! `cargo xtask bench [--vectors N] [--runs N] [--enc-pairs N] [--restore-sizes GB,..]
//! [--restore-pairs N] [--dir D]`: times `cp -r && sync`, `create`, `restore` into an empty dir,
//! `verify`, and an incremental after a 1% WAL append, on one generated data dir in one run, and
//! prints each as a ratio to `cp -r && sync` with its peak RSS. Caches are dropped before each
//! step when the machine allows it (root), so every step reads from disk alike.
//! Every step runs `--runs N` times (3 by default; the data dir grows by 1% of WAL per run) and
//! the medians are reported, since one run on a virtual disk can be off by a third.
//!
//! Then, on the same data dir, a paired comparison of an encrypted repository against a plain
//! one: for `create` and for `restore`, warm (one untimed round first, caches kept) and cold
//! (caches dropped before each run), `--enc-pairs N` rounds of `cp -r && sync`, plain, encrypted
//! (default: `--runs`, at least 5). It reports the median of the per-round ratios
//! encrypted/plain with their range, the median seconds, each one's ratio to `cp -r && sync`, and
//! the peak RSS. The encrypted repository uses `init --encrypt`'s default Argon2id settings,
//! so the key derivation of every command is part of its time.
//!
//! Last, `bench_drill`: for each size of `--restore-sizes` (GB, comma-separated, default `1`; `1`
//! is this data dir, any other G a data dir of G x 600,000 vectors generated for it and deleted
//! afterwards; the free disk space is checked first), one full backup, then warm and cold
//! `--restore-pairs N` pairs (default 5, at least 5) of `restore` into a dir that does not exist
//! and `cp -r && sync`, at most one output on disk at a time: the median per-pair ratio
//! restore/cp with its range, the median seconds and the restore MB/s. Then, when the binary
//! has `drill` and `create --golden`, the cost of `create --golden 100` against `create`
//! (paired, warm and cold, `--restore-pairs` pairs), and the phase times of three warm and
//! three cold `drill` runs on the `--golden` backup, which must pass; without them, a message
//! says these were skipped.
//! The 10 GB variant: `--vectors 6000000`; the restore comparison at 1 and 10 GB on the 1 GB
//! bench: `--restore-sizes 1,10`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use crate::util::{build_binary, drop_caches, du, median, peak_rss_kib, root};
use crate::{append_wal, bench_drill, gen_data};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Vectors in the generated data dir (600,000: about 1 GB; 6,000,000: about 10 GB).
    #[arg(long, value_name = "N", default_value_t = 600_000)]
    vectors: u64,
    /// Times to run every step; the medians are reported (at least 1).
    #[arg(long, value_name = "N", default_value_t = 3)]
    runs: u64,
    /// Rounds (cp, plain, encrypted) of the encrypted-vs-plain comparison, per operation and
    /// cache state [default: --runs, at least 5].
    #[arg(long, value_name = "N")]
    enc_pairs: Option<u64>,
    /// Where to put the data dir, copies and repository [default: target/bench].
    #[arg(long, value_name = "D")]
    dir: Option<PathBuf>,
    /// Sizes in GB of the restore-vs-cp comparison, comma-separated: 1 is the bench's data dir,
    /// any other G a data dir of G x 600,000 vectors made for it and deleted after (e.g. 1,10).
    #[arg(
        long,
        value_name = "GB,..",
        value_delimiter = ',',
        default_value = "1",
        value_parser = bench_drill::parse_gb
    )]
    restore_sizes: Vec<f64>,
    /// Pairs per row of the restore-vs-cp and golden-cost comparisons (at least 5).
    #[arg(long, value_name = "N", default_value_t = 5)]
    restore_pairs: u64,
}

/// The passphrase of the encrypted repositories of the comparison.
const PASSWORD: &str = "kyrodb-bench-passphrase";

/// The variable `kyrodb_backup` reads the passphrase of an encrypted repository from.
const PASSWORD_VAR: &str = "KYRODB_BACKUP_PASSWORD";

/// One timed command: wall seconds, peak RSS in KiB, and what it printed on stdout.
pub(crate) struct Sample {
    pub(crate) secs: f64,
    pub(crate) rss: u64,
    pub(crate) stdout: String,
}

/// Runs a shell command under `/usr/bin/time`, with the bench passphrase in the environment
/// when `password` (and without any otherwise), and without dropping caches first.
pub(crate) fn time_shell(cmd: &str, password: bool) -> Result<Sample> {
    let mut command = Command::new("/usr/bin/time");
    command.args(["-f", "%M", "sh", "-c", cmd]);
    if password {
        command.env(PASSWORD_VAR, PASSWORD);
    } else {
        command.env_remove(PASSWORD_VAR);
    }
    let start = Instant::now();
    let out = command
        .output()
        .context("running /usr/bin/time (Debian package `time`)")?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "{cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Sample {
        secs,
        rss: peak_rss_kib(&out.stderr),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// Drops caches, then runs a shell command under `/usr/bin/time`; returns (seconds, peak RSS
/// in KiB).
fn timed(cmd: &str) -> Result<(f64, u64)> {
    drop_caches();
    let s = time_shell(cmd, false)?;
    Ok((s.secs, s.rss))
}

/// One run of every step: (seconds, peak RSS KiB) per step, and the incremental's stored bytes.
struct Run {
    steps: [(f64, u64); 5],
    inc_stored: u64,
}

fn one_run(bin: &Path, base: &Path, data: &Path, size: u64) -> Result<Run> {
    let (b, d) = (bin.display(), data.display());
    let repo = base.join("repo");
    for leftover in ["copy", "repo", "restored"] {
        let _ = fs::remove_dir_all(base.join(leftover));
    }
    let r = repo.display();
    let cp = timed(&format!("cp -r {d} {}/copy && sync", base.display()))?;
    let create = timed(&format!("{b} -q --data-dir {d} --backup-dir {r} create"))?;
    let full_stored = du(&repo);
    let restore = timed(&format!(
        "{b} -q --backup-dir {r} --data-dir {}/restored restore --backup-id $({b} --backup-dir {r} list --format json | grep -m1 '\"id\"' | cut -d'\"' -f4)",
        base.display()
    ))?;
    let verify = timed(&format!("{b} -q --backup-dir {r} verify --all"))?;
    append_wal::run(append_wal::Args {
        dir: data.to_path_buf(),
        mb: (size / 100 / (1 << 20)).max(1),
    })?;
    let inc = timed(&format!(
        "{b} -q --data-dir {d} --backup-dir {r} create --incremental --reference latest"
    ))?;
    Ok(Run {
        steps: [cp, create, restore, verify, inc],
        inc_stored: du(&repo) - full_stored,
    })
}

/// Runs the benchmark; see the module documentation.
pub(crate) fn run(args: Args) -> Result<()> {
    let vectors = args.vectors;
    let runs = args.runs.max(1);
    let pairs = args.enc_pairs.unwrap_or(runs.max(5)).max(1);
    let base = args.dir.unwrap_or_else(|| root().join("target/bench"));
    let bin = build_binary(true)?;
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;
    let drill = bench_drill::Options {
        sizes: args.restore_sizes,
        pairs: args.restore_pairs,
        vectors,
    };
    bench_drill::preflight(&base, &drill)?;
    let data = base.join("data");
    gen_data::run(gen_data::Args::new(data.clone(), vectors))?;
    let size = du(&data);
    let mut all = Vec::new();
    for i in 0..runs {
        let run = one_run(&bin, &base, &data, size)?;
        println!(
            "run {}: {}",
            i + 1,
            run.steps
                .iter()
                .map(|(s, _)| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        all.push(run);
    }
    let names = [
        "cp -r && sync",
        "create (full)",
        "restore (durable, empty target)",
        "verify (reads every byte)",
        "create (incremental, +1% WAL)",
    ];
    let secs: Vec<f64> = (0..5)
        .map(|k| median(all.iter().map(|r| r.steps[k].0).collect()))
        .collect();
    let rss: Vec<u64> = (0..5)
        .map(|k| all.iter().map(|r| r.steps[k].1).max().unwrap_or(0))
        .collect();
    println!(
        "data dir: {:.2} GB ({vectors} vectors of dimension 384 + 4 WAL segments); median of {runs} runs, peak RSS the largest",
        size as f64 / 1e9
    );
    // cp on a host-cached virtual disk varies most of all: the ratio to its fastest run is the
    // strict one.
    let fastest_cp = all
        .iter()
        .map(|r| r.steps[0].0)
        .fold(f64::INFINITY, f64::min);
    println!(
        "{:<34} {:>8} {:>10} {:>12} {:>12}",
        "step", "seconds", "x cp+sync", "x fastest cp", "peak RSS"
    );
    for k in 0..5 {
        println!(
            "{:<34} {:>8.2} {:>10.2} {:>12.2} {:>9} MiB",
            names[k],
            secs[k],
            secs[k] / secs[0],
            secs[k] / fastest_cp,
            rss[k] / 1024
        );
    }
    let inc_stored = all.last().map_or(0, |r| r.inc_stored);
    println!(
        "incremental: {:.1}% of a full create's time, {:.2}% of the data's bytes stored ({inc_stored} bytes)",
        secs[4] / secs[1] * 100.0,
        inc_stored as f64 / size as f64 * 100.0
    );
    println!();
    encrypted_vs_plain(&bin, &base, &data, pairs)?;
    bench_drill::run(&bin, &base, &data, &drill)
}

// The encrypted-vs-plain comparison.

/// What the comparison times.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// A full `create` into a new repository.
    Create,
    /// A `restore` of the newest backup into a directory that does not exist yet.
    Restore,
}

impl Op {
    /// The operation's name in the output.
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Restore => "restore",
        }
    }
}

/// The members of a round, in the order they run.
#[derive(Debug, Clone, Copy)]
enum Member {
    /// `cp -r` of the data dir and `sync`: the baseline.
    Cp,
    /// The command on a plain repository.
    Plain,
    /// The command on an encrypted repository.
    Encrypted,
}

/// Every member of a round, in order; a round's samples are indexed alike.
const MEMBERS: [Member; 3] = [Member::Cp, Member::Plain, Member::Encrypted];

/// Caches are dropped before each run (cold) or kept after one untimed round (warm).
pub(crate) const CACHE_STATES: [(bool, &str); 2] = [(false, "warm"), (true, "cold")];

/// The paths of the comparison, and the backup id of the newest `create` in each repository.
struct Compare {
    bin: PathBuf,
    data: PathBuf,
    /// `<bench dir>/enc`: the copy, both repositories and the restored dir.
    dir: PathBuf,
    /// The backup id of the newest `create`: [plain, encrypted].
    ids: [String; 2],
}

/// The single-quoted form of `path` for `sh -c`.
pub(crate) fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

impl Compare {
    /// The repository of a `Plain` or `Encrypted` member.
    fn repo(&self, m: Member) -> PathBuf {
        self.dir.join(match m {
            Member::Encrypted => "encrypted",
            Member::Cp | Member::Plain => "plain",
        })
    }

    /// Index into `ids` of a `Plain` or `Encrypted` member.
    fn id_index(m: Member) -> usize {
        usize::from(matches!(m, Member::Encrypted))
    }

    /// What a run of `m` in `op` writes, removed before the run.
    fn output(&self, op: Op, m: Member) -> PathBuf {
        match (op, m) {
            (_, Member::Cp) => self.dir.join("copy"),
            (Op::Create, _) => self.repo(m),
            (Op::Restore, _) => self.dir.join("restored"),
        }
    }

    /// Untimed: removes the previous output and, before an encrypted `create`, makes the
    /// encrypted repository with `init --encrypt` (default Argon2id settings); then `sync`, so
    /// the timed `sync` flushes only what the run wrote.
    fn prepare(&self, op: Op, m: Member) -> Result<()> {
        let out = self.output(op, m);
        if out.exists() {
            fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
        }
        if let (Op::Create, Member::Encrypted) = (op, m) {
            let status = Command::new(&self.bin)
                .arg("-q")
                .arg("--backup-dir")
                .arg(&out)
                .args(["init", "--encrypt"])
                .env(PASSWORD_VAR, PASSWORD)
                .status()
                .context("running kyrodb_backup init --encrypt")?;
            ensure!(status.success(), "init --encrypt {} failed", out.display());
        }
        let _ = Command::new("sync").status();
        Ok(())
    }

    /// The timed shell command of `m` in `op`, ending with `sync`.
    fn command(&self, op: Op, m: Member) -> String {
        let (bin, data, out) = (
            quoted(&self.bin),
            quoted(&self.data),
            quoted(&self.output(op, m)),
        );
        match (op, m) {
            (_, Member::Cp) => format!("cp -r {data} {out} && sync"),
            (Op::Create, _) => {
                format!(
                    "{bin} -q --format json --data-dir {data} --backup-dir {out} create && sync"
                )
            }
            (Op::Restore, _) => format!(
                "{bin} -q --backup-dir {} --data-dir {out} restore --backup-id {} && sync",
                quoted(&self.repo(m)),
                self.ids[Self::id_index(m)]
            ),
        }
    }

    /// One run of `m` in `op`: prepare, drop caches when `cold`, time; after a `create`, keep
    /// the new backup's id for the restores.
    fn run(&mut self, op: Op, m: Member, cold: bool) -> Result<Sample> {
        self.prepare(op, m)?;
        if cold {
            drop_caches();
        }
        let sample = time_shell(&self.command(op, m), matches!(m, Member::Encrypted))?;
        if let (Op::Create, Member::Plain | Member::Encrypted) = (op, m) {
            let v: serde_json::Value = serde_json::from_str(&sample.stdout)
                .with_context(|| format!("create printed no JSON: {:?}", sample.stdout))?;
            let id = v["id"].as_str().context("create printed no backup id")?;
            self.ids[Self::id_index(m)] = id.to_string();
        }
        Ok(sample)
    }

    /// One round: every member once, in order.
    fn round(&mut self, op: Op, cold: bool) -> Result<[Sample; 3]> {
        let [a, b, c] = MEMBERS;
        Ok([
            self.run(op, a, cold)?,
            self.run(op, b, cold)?,
            self.run(op, c, cold)?,
        ])
    }

    /// `pairs` timed rounds of `op`; warm ones after one untimed round.
    fn row(&mut self, op: Op, cold: bool, label: &str, pairs: u64) -> Result<Row> {
        if !cold {
            self.round(op, false)?;
        }
        let mut rounds = Vec::new();
        for i in 0..pairs {
            let r = self.round(op, cold)?;
            println!(
                "{} {label} round {}: cp {:.2}s plain {:.2}s encrypted {:.2}s ({:.3}x)",
                op.name(),
                i + 1,
                r[0].secs,
                r[1].secs,
                r[2].secs,
                r[2].secs / r[1].secs
            );
            rounds.push(r.map(|s| (s.secs, s.rss)));
        }
        Ok(Row {
            label: format!("{} {label}", op.name()),
            rounds,
        })
    }
}

/// The timed rounds of one operation in one cache state: (seconds, peak RSS KiB) per member.
struct Row {
    label: String,
    rounds: Vec<[(f64, u64); 3]>,
}

impl Row {
    /// The per-round ratios of member `num`'s seconds to member `den`'s.
    fn ratios(&self, num: Member, den: Member) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|r| r[num as usize].0 / r[den as usize].0)
            .collect()
    }

    /// The median seconds of member `m`.
    fn secs(&self, m: Member) -> f64 {
        median(self.rounds.iter().map(|r| r[m as usize].0).collect())
    }

    /// The largest peak RSS of member `m`, in MiB.
    fn rss_mib(&self, m: Member) -> u64 {
        self.rounds
            .iter()
            .map(|r| r[m as usize].1)
            .max()
            .unwrap_or(0)
            / 1024
    }

    /// The median per-round ratio encrypted/plain.
    fn enc_ratio(&self) -> f64 {
        median(self.ratios(Member::Encrypted, Member::Plain))
    }

    /// The row of the table.
    fn print(&self) {
        let r = self.ratios(Member::Encrypted, Member::Plain);
        let (lo, hi) = r.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
        println!(
            "{:<15} {:>6.2} {:>7.2} {:>7.2} {:>8.3} {:>6.3} {:>6.3} {:>9.2} {:>7.2} {:>5} MiB {:>5} MiB",
            self.label,
            self.secs(Member::Cp),
            self.secs(Member::Plain),
            self.secs(Member::Encrypted),
            self.enc_ratio(),
            lo,
            hi,
            median(self.ratios(Member::Plain, Member::Cp)),
            median(self.ratios(Member::Encrypted, Member::Cp)),
            self.rss_mib(Member::Plain),
            self.rss_mib(Member::Encrypted),
        );
    }
}

/// Whether the page cache can be dropped here (root, and a writable `/proc/sys/vm`).
pub(crate) fn can_drop_caches() -> bool {
    fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .is_ok()
}

/// The paired comparison of an encrypted repository against a plain one (see the module
/// documentation), in `<base>/enc`, on `data`.
fn encrypted_vs_plain(bin: &Path, base: &Path, data: &Path, pairs: u64) -> Result<()> {
    for leftover in ["copy", "repo", "restored"] {
        let _ = fs::remove_dir_all(base.join(leftover));
    }
    let dir = base.join("enc");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let cold_note = if can_drop_caches() {
        "caches dropped before each run"
    } else {
        "caches could NOT be dropped (not root?): cold runs are not cold"
    };
    println!(
        "encrypted vs plain repository, {:.2} GB data dir: {pairs} rounds (cp -r && sync, plain, encrypted) per row",
        du(data) as f64 / 1e9
    );
    println!("warm: one untimed round first, caches kept; cold: {cold_note}");
    let mut cmp = Compare {
        bin: bin.to_path_buf(),
        data: data.to_path_buf(),
        dir,
        ids: [String::new(), String::new()],
    };
    let mut rows = Vec::new();
    for op in [Op::Create, Op::Restore] {
        for (cold, label) in CACHE_STATES {
            rows.push(cmp.row(op, cold, label, pairs)?);
        }
    }
    println!(
        "enc/pl: median per-round ratio encrypted/plain (min, max: its range); x cp: median per-round ratio to cp; RSS: largest peak"
    );
    println!(
        "{:<15} {:>6} {:>7} {:>7} {:>8} {:>6} {:>6} {:>9} {:>7} {:>9} {:>9}",
        "step",
        "cp s",
        "plain s",
        "enc s",
        "enc/pl",
        "min",
        "max",
        "plain xcp",
        "enc xcp",
        "RSS plain",
        "RSS enc"
    );
    for row in &rows {
        row.print();
    }
    let ratio = |i: usize| rows[i].enc_ratio();
    println!(
        "encrypted/plain: create warm {:.2}x cold {:.2}x; restore warm {:.2}x cold {:.2}x (target <= 1.15x)",
        ratio(0),
        ratio(1),
        ratio(2),
        ratio(3)
    );
    Ok(())
}
