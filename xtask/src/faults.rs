//! `cargo xtask faults`: the whole corruption matrix, every stored file damaged every way.
//!
//! Runs the `faults::` tests of the integration test binary in release mode with
//! `KYRODB_FAULT_CASES=all` (without it they run a representative sample).

use anyhow::Result;

use crate::util::cargo_test;

/// `cargo xtask faults` takes no arguments.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct Args {}

/// Runs every fault case.
pub(crate) fn run(Args {}: Args) -> Result<()> {
    cargo_test("faults", &[("KYRODB_FAULT_CASES", "all")])
}
