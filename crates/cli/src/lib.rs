//! The command-line front end of `kyrodb_backup`: argument parsing, commands, output.
//!
//! What it is for: turning the contract's command line (`../shared/docs/cli-contract.md`) into
//! calls of the library crates and printing their results as text or JSON. It reads the
//! environment and the clock on the libraries' behalf. What it is not for: exit codes, which
//! the binary decides from [`Outcome`] and the error kinds of `kyrodb-backup-storage`.
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
mod commands;
mod output;

pub use args::{
    parse_duration, CheckArgs, Cli, Command, CreateArgs, Format, RestoreArgs, VerifyArgs,
};
pub use commands::run;
pub use kyrodb_backup_chain::Error as ChainError;
pub use kyrodb_backup_storage::Error as StorageError;

/// How a command that ran to its end came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (exit code 0).
    Done,
    /// It ran, and found damage, a mismatch or no fresh backup (exit code 3).
    Integrity,
}

/// An error of the command line itself, with a hint for the operator.
#[derive(Debug)]
pub struct Hinted {
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl Hinted {
    /// An error with its hint.
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}
