//! `cargo xtask crash [N]`: `create`, `restore` and `prune` killed at `N` random instants each.
//!
//! Runs the `crash::` and then the `prune::` tests of the integration test binary in release
//! mode with `KYRODB_KILL_ROUNDS=N`.

use anyhow::Result;

use crate::util::cargo_test;

/// Arguments of `cargo xtask crash`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct Args {
    /// Random instants to kill each command at.
    #[arg(value_name = "N", default_value_t = 200)]
    rounds: u64,
}

/// Runs the kill tests with `rounds` rounds each.
pub(crate) fn run(args: Args) -> Result<()> {
    let rounds = args.rounds.to_string();
    cargo_test("crash", &[("KYRODB_KILL_ROUNDS", &rounds)])?;
    cargo_test("prune", &[("KYRODB_KILL_ROUNDS", &rounds)])
}
