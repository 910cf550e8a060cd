//! Project automation for `kyrodb_backup`, run as `cargo xtask <task>`.
//!
//! - `e2e`: backs up every engine-written fixture with the real binary, restores each backup
//!   into a fresh directory, and checks that the restored files are byte-identical to the
//!   captured ones and that the state they recover to equals the engine's `expected.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use kyrodb_backup_format::{recover, DirSource, FullState, RecoveryOptions};

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    if task == "e2e" {
        return e2e();
    }
    eprintln!(
        "usage: cargo xtask <task>\n\ntasks:\n  e2e    back up, restore and compare every fixture"
    );
    bail!("unknown task {task:?}")
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
    let fixtures = root().join("../shared/fixtures/kyrodb");
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
