//! Project automation for `kyrodb_backup`, run as `cargo xtask <task>`.
//!
//! - `e2e`: backs up every engine-written fixture with the real binary, restores each backup
//!   into a fresh directory, and checks that the restored files are byte-identical to the
//!   captured ones and that the state they recover to equals the engine's `expected.json`.

mod bench;
mod dist;
mod fuzz;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use kyrodb_backup_format::{
    recover, write_v4_snapshot, DataDirManifest, DirSource, DistanceMetric, FullState,
    RecoveryOptions, V4SnapshotOptions, WalEntry, WalLayout, WalOp, WalWriter,
};

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let rest: Vec<String> = std::env::args().skip(2).collect();
    match task.as_str() {
        "e2e" => e2e(),
        "gen-data" => gen_data(&rest),
        "append-wal" => append_wal(&rest),
        "fuzz" => fuzz::run(&root(), &rest),
        "bench" => bench::run(&root(), &rest),
        "dist" => dist::run(&root()),
        "faults" => cargo_test("faults", &[("KYRODB_FAULT_CASES", "all")]),
        "crash" => {
            let rounds = rest.first().map_or("200", String::as_str);
            cargo_test("crash", &[("KYRODB_KILL_ROUNDS", rounds)])?;
            cargo_test("prune", &[("KYRODB_KILL_ROUNDS", rounds)])
        }
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown task {task:?}")
        }
    }
}

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  e2e       back up, restore and compare every fixture
  gen-data  DIR [--vectors N] [--dim D] [--wal-segments K] [--wal-mb M]
  append-wal DIR [--mb M]   append M MiB of inserts to the newest WAL segment, as the engine would
  fuzz [--seconds S] [TARGET...]   mutation-fuzz the decoders (snapshot, wal, manifest, repo-manifest, chunk)
  bench [--vectors N]   cp -r && sync vs create, restore, verify, incremental (1 GB; 10 GB: --vectors 6000000)
  dist      shell completions (bash, zsh, fish) and man pages into target/dist
  faults    the whole corruption matrix (every stored file x every damage)
  crash [N] create, restore and prune killed at N random instants each (default 200)";

/// Runs one integration test file in release mode with extra environment.
fn cargo_test(test: &str, env: &[(&str, &str)]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["test", "--release", "--test", test, "--", "--nocapture"])
        .envs(env.iter().copied())
        .status()?;
    ensure!(status.success(), "cargo test --test {test} failed");
    Ok(())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn binary() -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--quiet", "--bin", "kyrodb_backup"])
        .status()?;
    ensure!(status.success(), "cargo build failed");
    Ok(root().join("target/debug/kyrodb_backup"))
}

fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<serde_json::Value> {
    let out = Command::new(bin)
        .args(args)
        .args(["--format", "json"])
        .envs(env.iter().copied())
        .output()?;
    if !out.status.success() {
        bail!(
            "kyrodb_backup {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest)?;
    for e in fs::read_dir(src)? {
        let e = e?;
        fs::write(dest.join(e.file_name()), fs::read(e.path())?)?;
    }
    Ok(())
}

fn files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            fs::read(e.path())?,
        );
    }
    Ok(out)
}

fn recovered(dir: &Path) -> Result<serde_json::Value> {
    let mut state = FullState::default();
    recover(
        &mut DirSource::new(dir),
        &mut state,
        &RecoveryOptions {
            torn_tail_is_error: false,
        },
    )?;
    Ok(state.to_expected_json())
}

fn e2e() -> Result<()> {
    let bin = binary()?;
    let fixtures = root().join("fixtures/kyrodb");
    let tmp = tempfile::tempdir()?;
    let mut failures = 0;
    for fixture in ["v4-basic", "v4-rotated", "v4-wal-only"] {
        let result = (|| -> Result<()> {
            let work = tmp.path().join(fixture);
            let data = work.join("data");
            let repo = work.join("backups");
            let target = work.join("restored");
            copy_dir(&fixtures.join(fixture).join("data"), &data)?;
            let expected_raw: serde_json::Value =
                serde_json::from_slice(&fs::read(fixtures.join(fixture).join("expected.json"))?)?;
            let expected = FullState::from_expected_json(&expected_raw)?.to_expected_json();
            let data_s = data.to_str().context("utf-8 path")?;
            let repo_s = repo.to_str().context("utf-8 path")?;
            let b = run(
                &bin,
                &["--data-dir", data_s, "--backup-dir", repo_s, "create"],
                &[],
            )?;
            let id = b["id"].as_str().context("create printed no id")?;
            let v = run(&bin, &["--backup-dir", repo_s, "verify", id], &[])?;
            ensure!(v["ok"] == true, "verify: {v}");
            let r = run(
                &bin,
                &[
                    "--backup-dir",
                    repo_s,
                    "--data-dir",
                    target.to_str().context("utf-8 path")?,
                    "restore",
                    "--backup-id",
                    id,
                ],
                &[],
            )?;
            ensure!(
                r["vector_count"] == expected["count"],
                "restore reported {r}"
            );
            let restored = files(&target)?;
            for (name, bytes) in &restored {
                ensure!(
                    fs::read(data.join(name))? == *bytes,
                    "{name} differs from the original"
                );
            }
            ensure!(
                recovered(&target)? == expected,
                "restored state differs from expected.json"
            );
            println!(
                "ok    {fixture}: {} files restored byte-identical, {} documents as the engine recovered",
                restored.len(),
                expected["count"]
            );
            Ok(())
        })();
        if let Err(e) = result {
            println!("FAIL  {fixture}: {e:#}");
            failures += 1;
        }
    }
    ensure!(failures == 0, "{failures} fixtures failed end to end");
    Ok(())
}

/// A small deterministic generator (`SplitMix64`), so generated data is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random unit vector of `dim` values.
    fn unit(&mut self, dim: u64) -> Vec<f32> {
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

pub(crate) fn flag(args: &[String], name: &str, default: u64) -> Result<u64> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .context(format!("{name} needs a value"))?
            .parse()
            .context(format!("{name} needs a number")),
    }
}

/// Writes an engine-format data directory; see the crate documentation.
pub(crate) fn gen_data(args: &[String]) -> Result<()> {
    let dir = PathBuf::from(args.first().context("gen-data needs a directory")?);
    let vectors = flag(args, "--vectors", 600_000)?;
    let dim = flag(args, "--dim", 384)?;
    let segments = flag(args, "--wal-segments", 4)?;
    let wal_mb = flag(args, "--wal-mb", 16)?;
    fs::create_dir_all(&dir)?;
    let ts = 1_795_000_000;
    let snapshot = "snapshot_1795000000000000.snap".to_string();
    let w = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(dir.join(&snapshot))?);
    let opts = V4SnapshotOptions {
        timestamp: ts,
        dimension: dim,
        distance: DistanceMetric::Cosine,
        last_wal_seq: vectors,
        count: vectors,
    };
    write_v4_snapshot(w, &opts, |i| (i + 1, Rng(i).unit(dim), Vec::new()))?;
    let mut rng = Rng(vectors);
    let mut seq = vectors;
    let mut names = Vec::new();
    for s in 0..segments {
        let name = format!("wal_{}.wal", 1_795_000_000_000_000 + s + 1);
        let f = std::io::BufWriter::new(fs::File::create(dir.join(&name))?);
        let mut w = WalWriter::new(f)?;
        let mut written = 4;
        while written < wal_mb << 20 {
            seq += 1;
            let e = WalEntry {
                op: WalOp::Insert,
                doc_id: seq,
                embedding: rng.unit(dim),
                metadata: vec![("batch".into(), s.to_string())],
                seq_no: seq,
                timestamp: ts + 1 + (seq - vectors) / 100,
            };
            w.append(&e, WalLayout::W3)?;
            written += 8 + 4 + 8 + 8 + 4 * dim + 8 + 8 + 5 + 8 + s.to_string().len() as u64 + 16;
        }
        std::io::Write::flush(&mut w.into_inner())?;
        names.push(name);
    }
    let manifest = DataDirManifest::modern(Some(snapshot), Some(vectors), names, ts);
    fs::write(dir.join("MANIFEST"), manifest.to_bytes())?;
    println!(
        "wrote {} ({vectors} vectors of dimension {dim}, {segments} WAL segments of ~{wal_mb} MiB, last seq {seq})",
        dir.display()
    );
    Ok(())
}

/// Appends inserts to a data dir's newest segment; see the crate documentation.
pub(crate) fn append_wal(args: &[String]) -> Result<()> {
    let dir = PathBuf::from(args.first().context("append-wal needs a directory")?);
    let mb = flag(args, "--mb", 10)?;
    let mut ids = kyrodb_backup_format::LiveIds::default();
    let report = recover(
        &mut DirSource::new(&dir),
        &mut ids,
        &RecoveryOptions::default(),
    )?;
    let last = report
        .segments
        .last()
        .context("the MANIFEST lists no WAL segment")?;
    let mut seq = report.last_seq();
    let dim = report.dimension.unwrap_or(384);
    let file = fs::OpenOptions::new()
        .append(true)
        .open(dir.join(&last.name))?;
    let mut out = std::io::BufWriter::new(file);
    let mut rng = Rng(seq);
    let mut written = 0;
    while written < mb << 20 {
        seq += 1;
        let entry = WalEntry {
            op: WalOp::Insert,
            doc_id: seq,
            embedding: rng.unit(dim),
            metadata: Vec::new(),
            seq_no: seq,
            timestamp: 1_795_100_000,
        };
        let body = kyrodb_backup_format::encode_entry(&entry, WalLayout::W3);
        std::io::Write::write_all(&mut out, &(body.len() as u32).to_le_bytes())?;
        std::io::Write::write_all(&mut out, &body)?;
        std::io::Write::write_all(&mut out, &crc32fast::hash(&body).to_le_bytes())?;
        written += body.len() as u64 + 8;
    }
    std::io::Write::flush(&mut out)?;
    println!("appended {written} bytes to {} (last seq {seq})", last.name);
    Ok(())
}
