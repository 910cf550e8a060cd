//! `kyrodb_backup`: backup and recovery for KyroDB data directories.
//!
//! The binary parses the command line, runs the command, and decides the exit code, here and
//! nowhere else (see the exit-code table of the CLI contract).

use std::process::ExitCode;

use clap::Parser;
use kyrodb_backup_cli::{run, ChainError, Cli, Hinted, Outcome, StorageError};

/// Done.
const EXIT_OK: u8 = 0;
/// Failed: I/O, bad input, not found.
const EXIT_FAILED: u8 = 1;
/// Usage error.
const EXIT_USAGE: u8 = 2;
/// Integrity: damage, mismatch, or no fresh backup.
const EXIT_INTEGRITY: u8 = 3;
/// Refused for safety.
const EXIT_REFUSED: u8 = 4;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(&cli) {
        Ok(Outcome::Done) => ExitCode::from(EXIT_OK),
        Ok(Outcome::Integrity) => ExitCode::from(EXIT_INTEGRITY),
        Err(e) => {
            let storage = e.chain().find_map(|c| c.downcast_ref::<StorageError>());
            let chain = e.chain().find_map(|c| c.downcast_ref::<ChainError>());
            eprintln!("error: {e}");
            let cli_hint = e
                .chain()
                .find_map(|c| c.downcast_ref::<Hinted>())
                .map(|h| h.hint.clone());
            let chain_hint = chain.and_then(|c| match c {
                ChainError::NotRecoverable { .. } => Some(
                    "add --nearest to restore the latest recoverable second before it".to_string(),
                ),
                ChainError::NoBackups => Some("create a full backup first".to_string()),
                _ => None,
            });
            if let Some(hint) = cli_hint
                .or(chain_hint)
                .or_else(|| storage.and_then(StorageError::hint))
            {
                eprintln!("hint: {hint}");
            }
            if matches!(chain, Some(ChainError::NotRecoverable { .. })) {
                return ExitCode::from(EXIT_REFUSED);
            }
            ExitCode::from(match storage {
                Some(s) if s.is_refusal() => EXIT_REFUSED,
                Some(s) if s.is_integrity() => EXIT_INTEGRITY,
                _ => EXIT_FAILED,
            })
        }
    }
}
