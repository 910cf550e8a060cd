//! Project automation for `kyrodb_backup`, run as `cargo xtask <task>`.
//!
//! Every task lives in its own module with a `run` function; this file only parses the
//! command line and dispatches. `cargo xtask --help` lists the tasks.

mod append_wal;
mod archive_soak;
mod bench;
mod bench_archive;
mod bench_drill;
mod bench_s3;
mod crash;
mod dist;
mod e2e;
mod faults;
mod fuzz;
mod gen_data;
mod shared;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The command line: one task and its arguments.
#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Project automation for kyrodb_backup",
    long_about = None,
    arg_required_else_help = true
)]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

/// One task per variant; each variant's documentation is its line in `--help`.
#[derive(Debug, Subcommand)]
enum Task {
    /// Back up, restore and compare every fixture
    E2e(e2e::Args),
    /// Write an engine-format data dir (600,000 vectors of dimension 384, ~1 GB, by default)
    GenData(gen_data::Args),
    /// Append M MiB of inserts to the newest WAL segment, as the engine would
    AppendWal(append_wal::Args),
    /// Mutation-fuzz the decoders of untrusted bytes (engine files, repository encodings, built-in archives)
    Fuzz(fuzz::Args),
    /// Benchmark create, restore, verify, incremental vs cp -r && sync, golden queries, drill (1 GB by default)
    Bench(bench::Args),
    /// Benchmark create, restore, incremental and list on a bucket of a local S3 server vs a local repository
    BenchS3(bench_s3::Args),
    /// Benchmark `archive`: recovery point, highest rate followed, CPU, memory, requests, objects after a soak
    BenchArchive(bench_archive::Args),
    /// The continuous archive's kill-and-restore soak (--secs N, default 600; --s3 for a bucket too)
    ArchiveSoak(archive_soak::Args),
    /// Shell completions (bash, zsh, fish) and man pages into target/dist
    Dist(dist::Args),
    /// The whole corruption matrix (every stored file x every damage)
    Faults(faults::Args),
    /// Kill create, restore and prune at N random instants each (default 200)
    Crash(crash::Args),
    /// Compare the fixtures and reference docs with the originals in ../shared (--update: copy)
    Shared(shared::Args),
}

fn main() -> Result<()> {
    match Xtask::parse().task {
        Task::E2e(args) => e2e::run(args),
        Task::GenData(args) => gen_data::run(args),
        Task::AppendWal(args) => append_wal::run(args),
        Task::Fuzz(args) => fuzz::run(args),
        Task::Bench(args) => bench::run(args),
        Task::BenchS3(args) => bench_s3::run(args),
        Task::BenchArchive(args) => bench_archive::run(args),
        Task::ArchiveSoak(args) => archive_soak::run(args),
        Task::Dist(args) => dist::run(args),
        Task::Faults(args) => faults::run(args),
        Task::Crash(args) => crash::run(args),
        Task::Shared(args) => shared::run(args),
    }
}
