//! `config`: a repository's settings (the defaults its commands take).

use serde::Serialize;

use crate::access::RepoRef;
use crate::catalog::open_repo;
use crate::create::MAX_GOLDEN_QUERIES;
use crate::error::{Error, Result};

/// Settings to change; `None` leaves one as it is.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConfigOptions {
    /// Golden queries `create` records when not told (0: none).
    pub golden_queries: Option<u64>,
}

/// A repository's settings after the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigReport {
    /// The repository.
    pub location: String,
    /// Golden queries `create` records when not told (0: none).
    pub golden_queries: u64,
    /// Whether anything was changed.
    pub changed: bool,
}

/// Shows the settings of the repository at `backup_dir`, changing those `opts` names first.
///
/// # Errors
///
/// [`Error::NotARepository`], [`Error::InvalidOptions`] for more golden queries than a backup
/// records, I/O errors.
pub fn config(backup_dir: impl Into<RepoRef>, opts: &ConfigOptions) -> Result<ConfigReport> {
    let backup_dir = backup_dir.into();
    let repo = open_repo(&backup_dir)?;
    let mut settings = repo.settings()?;
    let mut changed = false;
    if let Some(n) = opts.golden_queries {
        if n > MAX_GOLDEN_QUERIES as u64 {
            return Err(Error::InvalidOptions(format!(
                "a backup records at most {MAX_GOLDEN_QUERIES} golden queries"
            )));
        }
        if settings.golden_queries != n {
            settings.golden_queries = n;
            repo.set_settings(&settings)?;
            changed = true;
        }
    }
    Ok(ConfigReport {
        location: repo.location(),
        golden_queries: settings.golden_queries,
        changed,
    })
}
