//! `cargo xtask e2e`: backs up every engine-written fixture with the real binary, restores each
//! backup into a fresh directory, and checks that the restored files are byte-identical to the
//! captured ones and that the state they recover to equals the engine's `expected.json`.
//!
//! The fixtures are read from `<workspace root>/fixtures/kyrodb/<fixture>/{data,expected.json}`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use kyrodb_backup_format::engine::{recover, DirSource, FullState, RecoveryOptions};

use crate::util::{build_binary, fixtures};

/// The fixtures backed up and restored.
const FIXTURES: [&str; 3] = ["v4-basic", "v4-rotated", "v4-wal-only"];

/// Arguments of `cargo xtask e2e`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Test this `kyrodb_backup` binary instead of building one (CI passes the one the tests
    /// built).
    #[arg(long, value_name = "PATH")]
    bin: Option<std::path::PathBuf>,
}

/// Runs every fixture end to end and fails if any of them did.
pub(crate) fn run(Args { bin }: Args) -> Result<()> {
    let bin = match bin {
        Some(bin) => bin,
        None => build_binary(false)?,
    };
    let fixtures = fixtures().join("kyrodb");
    let tmp = tempfile::tempdir()?;
    let mut failures = 0;
    for fixture in FIXTURES {
        let result = one_fixture(&bin, &fixtures.join(fixture), &tmp.path().join(fixture));
        match result {
            Ok((files, count)) => println!(
                "ok    {fixture}: {files} files restored byte-identical, {count} documents as the engine recovered"
            ),
            Err(e) => {
                println!("FAIL  {fixture}: {e:#}");
                failures += 1;
            }
        }
    }
    ensure!(failures == 0, "{failures} fixtures failed end to end");
    Ok(())
}

/// Backs up, verifies and restores one fixture inside `work`; returns the number of files
/// restored and the document count from `expected.json`.
fn one_fixture(bin: &Path, fixture: &Path, work: &Path) -> Result<(usize, serde_json::Value)> {
    let data = work.join("data");
    let repo = work.join("backups");
    let target = work.join("restored");
    copy_dir(&fixture.join("data"), &data)?;
    let expected_raw: serde_json::Value =
        serde_json::from_slice(&fs::read(fixture.join("expected.json"))?)?;
    let expected = FullState::from_expected_json(&expected_raw)?.to_expected_json();
    let data_s = data.to_str().context("utf-8 path")?;
    let repo_s = repo.to_str().context("utf-8 path")?;
    let b = kyrodb_json(
        bin,
        &["--data-dir", data_s, "--backup-dir", repo_s, "create"],
    )?;
    let id = b["id"].as_str().context("create printed no id")?;
    let v = kyrodb_json(bin, &["--backup-dir", repo_s, "verify", id])?;
    ensure!(v["ok"] == true, "verify: {v}");
    let r = kyrodb_json(
        bin,
        &[
            "--backup-dir",
            repo_s,
            "--data-dir",
            target.to_str().context("utf-8 path")?,
            "restore",
            "--backup-id",
            id,
        ],
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
    Ok((restored.len(), expected["count"].clone()))
}

/// Runs `kyrodb_backup ARGS --format json` and returns what it printed.
fn kyrodb_json(bin: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(bin)
        .args(args)
        .args(["--format", "json"])
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

/// Copies the files of `src` (no subdirectories) into `dest`.
fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest)?;
    for e in fs::read_dir(src)? {
        let e = e?;
        fs::write(dest.join(e.file_name()), fs::read(e.path())?)?;
    }
    Ok(())
}

/// The files of `dir` by name.
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

/// The state `dir` recovers to, as `expected.json` would hold it.
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
