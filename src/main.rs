//! `kyrodb_backup`: backup and recovery for KyroDB data directories.
//!
//! The binary parses the command line, runs the command, and decides the exit code, here and
//! nowhere else (see the exit-code table of the CLI contract).

use std::process::ExitCode;

use clap::Parser;
use kyrodb_backup_cli::{run, Cli, ErrorKind, Outcome};

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
    ExitCode::from(match run(&cli) {
        Ok(Outcome::Done) => EXIT_OK,
        Ok(Outcome::Integrity) => EXIT_INTEGRITY,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            if let Some(hint) = &failure.hint {
                eprintln!("hint: {hint}");
            }
            match failure.kind {
                ErrorKind::Refused => EXIT_REFUSED,
                ErrorKind::Integrity => EXIT_INTEGRITY,
                _ => EXIT_FAILED,
            }
        }
    })
}
