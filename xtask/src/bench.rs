//! `cargo xtask bench [--vectors N] [--runs N] [--dir D]`: times `cp -r && sync`, `create`, `restore` into an
//! empty dir, `verify`, and an incremental after a 1% WAL append, on one generated data dir in
//! one run, and prints each as a ratio to `cp -r && sync` with its peak RSS. Caches are dropped
//! before each step when the machine allows it (root), so every step reads from disk alike.
//! Every step runs `--runs N` times (3 by default; the data dir grows by 1% of WAL per run) and
//! the medians are reported, since one run on a virtual disk can be off by a third.
//! The 10 GB variant: `--vectors 6000000`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use crate::util::{build_binary, drop_caches, du, median, peak_rss_kib, root};
use crate::{append_wal, gen_data};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Vectors in the generated data dir (600,000: about 1 GB; 6,000,000: about 10 GB).
    #[arg(long, value_name = "N", default_value_t = 600_000)]
    vectors: u64,
    /// Times to run every step; the medians are reported (at least 1).
    #[arg(long, value_name = "N", default_value_t = 3)]
    runs: u64,
    /// Where to put the data dir, copies and repository [default: target/bench].
    #[arg(long, value_name = "D")]
    dir: Option<PathBuf>,
}

/// Runs a shell command under `/usr/bin/time`; returns (seconds, peak RSS in KiB).
fn timed(cmd: &str) -> Result<(f64, u64)> {
    drop_caches();
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "sh", "-c", cmd])
        .output()
        .context("running /usr/bin/time (Debian package `time`)")?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "{cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = peak_rss_kib(&out.stderr);
    Ok((secs, rss))
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
    let base = args.dir.unwrap_or_else(|| root().join("target/bench"));
    let bin = build_binary(true)?;
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;
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
    Ok(())
}
