//! `cargo xtask archive-soak [--secs N] [--s3]`: the continuous archive's kill-and-restore soak
//! for as long as asked.
//!
//! Runs the ignored `archive::long_soak` test of the integration test binary in release mode:
//! an engine-protocol writer (appends, rotation, snapshots with compaction) writes for `--secs`
//! seconds while `archive` follows it and is killed with SIGKILL about every 20 seconds (every
//! other time only after a compaction while it is down); then every second from the first
//! start restores exactly, compared with the writer's own log, except the gaps the archiver
//! reported, which must lie inside the times it was down.

use std::process::Command;

use anyhow::{ensure, Result};

use crate::util::root;

/// Arguments of `cargo xtask archive-soak`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct Args {
    /// Seconds of writing.
    #[arg(long, value_name = "N", default_value_t = 600)]
    secs: u64,
    /// Also on a bucket of a local S3 server (moto, on 127.0.0.1).
    #[arg(long)]
    s3: bool,
}

/// Runs the soak.
pub(crate) fn run(args: Args) -> Result<()> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root())
        .args(["test", "--release", "--test", "it", "archive::long_soak"])
        .args(["--", "--ignored", "--exact", "--nocapture"])
        .env("KYRODB_SOAK_SECS", args.secs.to_string());
    if args.s3 {
        cmd.env("KYRODB_SOAK_S3", "1");
    }
    let status = cmd.status()?;
    ensure!(status.success(), "the archive soak failed");
    Ok(())
}
