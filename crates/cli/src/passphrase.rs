//! Where `kyrodb_backup` finds the passphrase of an encrypted repository: `--password-file`,
//! then `KYRODB_BACKUP_PASSWORD`, then a prompt on a terminal. Asked only when a repository
//! turns out to be encrypted; a prompt is asked once per run.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kyrodb_backup_ops::{KeySource, Secret};

/// A passphrase source of the command line.
#[derive(Debug)]
pub(crate) struct CliPassphrase {
    file: Option<PathBuf>,
    variable: &'static str,
    /// What a prompt got, so one run asks once.
    asked: Mutex<Option<Secret>>,
    /// A new passphrase: asked twice on a terminal.
    confirm: bool,
}

impl CliPassphrase {
    /// The passphrase of `--password-file` or `variable`, else a prompt.
    pub(crate) fn new(file: Option<PathBuf>, variable: &'static str) -> Self {
        Self {
            file,
            variable,
            asked: Mutex::new(None),
            confirm: false,
        }
    }

    /// A new passphrase (a prompt asks twice).
    pub(crate) fn new_passphrase(file: Option<PathBuf>, variable: &'static str) -> Self {
        Self {
            confirm: true,
            ..Self::new(file, variable)
        }
    }

    /// The passphrase, for a repository named `location`.
    pub(crate) fn get(&self, location: &str) -> Result<Secret, String> {
        if let Some(file) = &self.file {
            return read_file(file);
        }
        if let Some(v) = std::env::var_os(self.variable) {
            let v = Secret::new(v.into_encoded_bytes());
            if v.is_empty() {
                return Err(format!("{} is set but empty", self.variable));
            }
            return Ok(v);
        }
        let mut asked = self.asked.lock().expect("lock");
        if let Some(p) = asked.as_ref() {
            return Ok(p.clone());
        }
        if !std::io::stdin().is_terminal() {
            return Err(
                "no passphrase file or variable was given, and there is no terminal to ask on"
                    .into(),
            );
        }
        let what = if self.confirm {
            "New passphrase"
        } else {
            "Passphrase"
        };
        let first = prompt(&format!("{what} for {location}: "))?;
        if self.confirm {
            let again = prompt("Repeat it: ")?;
            if *again != *first {
                return Err("the two passphrases differ".into());
            }
        }
        if first.is_empty() {
            return Err("the passphrase is empty".into());
        }
        *asked = Some(first.clone());
        Ok(first)
    }
}

impl KeySource for CliPassphrase {
    fn passphrase(&self, location: &str) -> Result<Secret, String> {
        self.get(location)
    }
}

fn prompt(text: &str) -> Result<Secret, String> {
    rpassword::prompt_password(text)
        .map(|s| Secret::new(s.into_bytes()))
        .map_err(|e| format!("cannot read the passphrase from the terminal: {e}"))
}

/// The first line of a passphrase file (without its line ending).
fn read_file(path: &Path) -> Result<Secret, String> {
    let bytes = Secret::new(
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(format!(
            "{} holds no passphrase on its first line",
            path.display()
        ));
    }
    Ok(Secret::new(line.to_vec()))
}
