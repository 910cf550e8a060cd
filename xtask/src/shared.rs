//! `cargo xtask shared [--update]`: the fixtures and reference documents this repository
//! keeps copies of, compared with the KyroDB team's originals in `../shared` (CI has them
//! beside the checkout). Without `--update` any difference fails the task; with it, the
//! copies are made again.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::util::root;

/// Arguments of `shared`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Copy the originals over the repository's copies instead of comparing.
    #[arg(long)]
    update: bool,
}

/// (original, copy) pairs, relative to `../shared` and the workspace root.
const PAIRS: [(&str, &str); 4] = [
    ("fixtures/kyrodb", "fixtures/kyrodb"),
    (
        "fixtures/kyrodb-builtin-backups",
        "fixtures/kyrodb-builtin-backups",
    ),
    ("docs/kyrodb-format.md", "docs/reference/kyrodb-format.md"),
    ("docs/cli-contract.md", "docs/reference/cli-contract.md"),
];

/// Every file under `path` (or `path` itself) with its bytes, keyed by relative path.
fn files(path: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    if path.is_file() {
        out.insert(PathBuf::new(), fs::read(path)?);
        return Ok(out);
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(path)?.to_path_buf(), fs::read(&p)?);
            }
        }
    }
    Ok(out)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    for (rel, bytes) in files(from)? {
        let dest = if rel.as_os_str().is_empty() {
            to.to_path_buf()
        } else {
            to.join(rel)
        };
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&dest, bytes)?;
    }
    Ok(())
}

pub(crate) fn run(Args { update }: Args) -> Result<()> {
    let shared = root().join("../shared");
    ensure!(
        shared.is_dir(),
        "{} is not there: nothing to compare with",
        shared.display()
    );
    let mut differ = Vec::new();
    for (original, copy_of) in PAIRS {
        let (from, to) = (shared.join(original), root().join(copy_of));
        if update {
            copy(&from, &to)?;
            println!("copied {original} to {copy_of}");
        } else if files(&from)? == files(&to)? {
            println!("same: {copy_of}");
        } else {
            differ.push(copy_of);
        }
    }
    if !differ.is_empty() {
        bail!(
            "these copies differ from ../shared: {} (run `cargo xtask shared --update`, review, commit)",
            differ.join(", ")
        );
    }
    Ok(())
}
