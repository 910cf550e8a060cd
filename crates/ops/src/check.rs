//! `check`: monitoring of backup freshness.

use kyrodb_backup_storage::backend::Location;

use serde::Serialize;

use crate::catalog::listing_of;
use crate::error::Result;
use crate::model::Now;

/// What `check` is asked to do.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Oldest acceptable age of the newest backup, in seconds.
    pub max_age: u64,
}

impl CheckOptions {
    /// Fails when the newest backup is older than `max_age` seconds.
    pub fn max_age(max_age: u64) -> Self {
        Self { max_age }
    }
}

/// What `check` found. `ok` is false when there is no backup or the newest is too old.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Whether the newest backup is fresh enough.
    pub ok: bool,
    /// The newest backup.
    pub newest_id: Option<String>,
    /// When it was taken.
    pub newest_timestamp: Option<u64>,
    /// Its age at `now`.
    pub age_seconds: Option<u64>,
    /// The limit.
    pub max_age_seconds: u64,
}

/// Checks the newest backup of the repository at `backup_dir` against `opts.max_age` at
/// `now`. A directory without a repository has no backup (not ok).
///
/// # Errors
///
/// [`crate::Error::NotARepository`] when `backup_dir` is not a directory; damage to the
/// repository's marker.
pub fn check(
    backup_dir: impl Into<Location>,
    opts: &CheckOptions,
    now: Now,
) -> Result<CheckReport> {
    let backup_dir = &backup_dir.into();
    let listing = listing_of(backup_dir)?;
    let newest = listing.backups.first();
    let age = newest.map(|b| now.secs.saturating_sub(b.manifest.timestamp));
    Ok(CheckReport {
        ok: age.is_some_and(|age| age <= opts.max_age),
        newest_id: newest.map(|b| b.manifest.id.clone()),
        newest_timestamp: newest.map(|b| b.manifest.timestamp),
        age_seconds: age,
        max_age_seconds: opts.max_age,
    })
}
