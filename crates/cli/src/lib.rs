//! The command-line front end of `kyrodb_backup`: argument parsing, and rendering the
//! commands' reports as text, tables or JSON, with the hints an operator reads on failure.
//!
//! What it is for: turning the contract's command line into calls of `kyrodb-backup-ops`
//! (reading the environment and the clock on its behalf) and printing what they return. It
//! owns every flag name and hint. What it is not for: what the commands do (the `ops` crate
//! and the crates under it), or exit codes, which the binary decides from [`Outcome`] and
//! [`Failure::kind`].
//!
//! ```
//! use clap::Parser;
//! use kyrodb_backup_cli::{Cli, Command};
//!
//! let cli = Cli::try_parse_from(["kyrodb_backup", "list", "--backup-dir", "/srv/backups"])?;
//! assert!(matches!(cli.command, Command::List));
//! assert_eq!(cli.backup_dir, std::path::Path::new("/srv/backups"));
//! # Ok::<(), clap::Error>(())
//! ```

mod args;
mod aws;
mod hints;
mod output;
mod passphrase;
mod render;
mod run;

pub use args::{
    parse_duration, CheckArgs, Cli, Command, CreateArgs, Format, RestoreArgs, VerifyArgs,
};
pub use hints::Failure;
pub use kyrodb_backup_ops::ErrorKind;
pub use run::run;

/// How a command that ran to its end came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (exit code 0).
    Done,
    /// It ran, and found damage, a mismatch or no fresh backup (exit code 3).
    Integrity,
}

/// This host's name, for the records an archiver leaves.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
