//! Helpers shared by several tasks: the workspace root, building the binary, running the
//! integration tests, and a deterministic random number generator for generated data.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Result};

/// The workspace root (the directory holding `xtask/`).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The fixtures the engine wrote: `<workspace root>/fixtures`.
pub(crate) fn fixtures() -> PathBuf {
    root().join("fixtures")
}

/// Builds `kyrodb_backup` (in release mode when `release`) and returns the binary's path.
pub(crate) fn build_binary(release: bool) -> Result<PathBuf> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root()).arg("build");
    if release {
        cmd.arg("--release");
    }
    let status = cmd.args(["--quiet", "--bin", "kyrodb_backup"]).status()?;
    if release {
        ensure!(status.success(), "cargo build --release failed");
        Ok(root().join("target/release/kyrodb_backup"))
    } else {
        ensure!(status.success(), "cargo build failed");
        Ok(root().join("target/debug/kyrodb_backup"))
    }
}

/// The one integration test binary, `tests/it/main.rs`.
const TEST_BINARY: &str = "it";

/// Runs the tests of one module of the integration test binary (`<module>::`) in release mode,
/// with extra environment.
pub(crate) fn cargo_test(module: &str, env: &[(&str, &str)]) -> Result<()> {
    let filter = format!("{module}::");
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["test", "--release", "--test", TEST_BINARY, &filter])
        .args(["--", "--nocapture"])
        .envs(env.iter().copied())
        .status()?;
    ensure!(
        status.success(),
        "cargo test --test {TEST_BINARY} {filter} failed"
    );
    Ok(())
}

/// A small deterministic generator (`SplitMix64`), so generated data is the same on every run.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random unit vector of `dim` values.
    pub(crate) fn unit(&mut self, dim: u64) -> Vec<f32> {
        let v: Vec<f32> = (0..dim)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect();
        let norm = v
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        v.into_iter().map(|x| x / norm).collect()
    }
}

/// Flushes dirty pages and drops the page cache (when the machine allows it: root), so the
/// next step reads from disk.
pub(crate) fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3\n");
}

/// Bytes of the files under `path`.
pub(crate) fn du(path: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let p = e.path();
        total += if p.is_dir() {
            du(&p)
        } else {
            std::fs::metadata(&p).map_or(0, |m| m.len())
        };
    }
    total
}

/// The median (the upper one of an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The peak RSS in KiB that `/usr/bin/time -f %M` printed as the last line of `stderr`.
pub(crate) fn peak_rss_kib(stderr: &[u8]) -> u64 {
    String::from_utf8_lossy(stderr)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}
