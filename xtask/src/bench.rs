//! `cargo xtask bench [--vectors N] [--dir D]`: times `cp -r && sync`, `create`, `restore` into an
//! empty dir, `verify`, and an incremental after a 1% WAL append, on one generated data dir in
//! one run, and prints each as a ratio to `cp -r && sync` with its peak RSS. Caches are dropped
//! before each step when the machine allows it (root), so every step reads from disk alike.
//! The 10 GB variant: `--vectors 6000000`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = fs::write("/proc/sys/vm/drop_caches", "3\n");
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
    let rss = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    Ok((secs, rss))
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(path).into_iter().flatten().flatten() {
        let p = e.path();
        total += if p.is_dir() {
            du(&p)
        } else {
            fs::metadata(&p).map_or(0, |m| m.len())
        };
    }
    total
}

/// Runs the benchmark; see the module documentation.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let vectors = crate::flag(args, "--vectors", 600_000)?;
    let base = match args.iter().position(|a| a == "--dir") {
        Some(i) => std::path::PathBuf::from(args.get(i + 1).context("--dir needs a path")?),
        None => root.join("target/bench"),
    };
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--release", "--quiet", "--bin", "kyrodb_backup"])
        .status()?;
    ensure!(status.success(), "cargo build --release failed");
    let bin = root.join("target/release/kyrodb_backup");
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;
    let data = base.join("data");
    crate::gen_data(&[
        data.display().to_string(),
        "--vectors".into(),
        vectors.to_string(),
    ])?;
    let size = du(&data);
    let (b, d) = (bin.display(), data.display());
    let repo = base.join("repo");
    let r = repo.display();
    let (cp, cp_rss) = timed(&format!("cp -r {d} {}/copy && sync", base.display()))?;
    let (create, create_rss) = timed(&format!("{b} -q --data-dir {d} --backup-dir {r} create"))?;
    let full_stored = du(&repo);
    let (restore, restore_rss) = timed(&format!(
        "{b} -q --backup-dir {r} --data-dir {}/restored restore --backup-id $({b} --backup-dir {r} list --format json | grep -m1 '\"id\"' | cut -d'\"' -f4)",
        base.display()
    ))?;
    let (verify, verify_rss) = timed(&format!("{b} -q --backup-dir {r} verify --all"))?;
    crate::append_wal(&[
        d.to_string(),
        "--mb".into(),
        (size / 100 / (1 << 20)).max(1).to_string(),
    ])?;
    let (inc, inc_rss) = timed(&format!(
        "{b} -q --data-dir {d} --backup-dir {r} create --incremental --reference latest"
    ))?;
    let inc_stored = du(&repo) - full_stored;
    println!(
        "data dir: {:.2} GB ({vectors} vectors of dimension 384 + 4 WAL segments)",
        size as f64 / 1e9
    );
    println!(
        "{:<34} {:>8} {:>10} {:>12}",
        "step", "seconds", "x cp+sync", "peak RSS"
    );
    let row = |name: &str, s: f64, rss: u64| {
        println!("{name:<34} {s:>8.2} {:>10.2} {:>9} MiB", s / cp, rss / 1024);
    };
    row("cp -r && sync", cp, cp_rss);
    row("create (full)", create, create_rss);
    row("restore (durable, empty target)", restore, restore_rss);
    row("verify (reads every byte)", verify, verify_rss);
    row("create (incremental, +1% WAL)", inc, inc_rss);
    println!(
        "incremental: {:.1}% of a full create's time, {:.2}% of the data's bytes stored ({inc_stored} bytes)",
        inc / create * 100.0,
        inc_stored as f64 / size as f64 * 100.0
    );
    Ok(())
}
