//! `check`: monitoring of backup freshness.

use crate::access::RepoRef;

use std::path::{Path, PathBuf};

use kyrodb_backup_datadir::follow::{Follower, Resume, Start};
use kyrodb_backup_storage::Repository;
use serde::Serialize;

use crate::catalog::listing_of;
use crate::error::{Error, Result};
use crate::model::Now;

/// What `check` is asked to do: each limit given is checked.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Oldest acceptable age of the newest backup, in seconds.
    pub max_age: Option<u64>,
    /// Longest acceptable delay of the continuous archive, in seconds: its archiver must have
    /// reported within it, and (with `data_dir`) no frame of the data dir may have waited
    /// longer than it to be stored.
    pub max_lag: Option<u64>,
    /// The live data dir the archive follows, to measure the delay against.
    pub data_dir: Option<PathBuf>,
    /// Oldest acceptable age of the last restore drill that passed, in seconds.
    pub max_drill_age: Option<u64>,
}

impl CheckOptions {
    /// Fails when the newest backup is older than `max_age` seconds.
    pub fn max_age(max_age: u64) -> Self {
        Self {
            max_age: Some(max_age),
            ..Self::default()
        }
    }

    /// Fails when the continuous archive is more than `max_lag` seconds behind.
    pub fn max_lag(max_lag: u64) -> Self {
        Self {
            max_lag: Some(max_lag),
            ..Self::default()
        }
    }

    /// Fails when no restore drill passed within the last `max_drill_age` seconds.
    pub fn max_drill_age(max_drill_age: u64) -> Self {
        Self {
            max_drill_age: Some(max_drill_age),
            ..Self::default()
        }
    }
}

/// How recent the last passed restore drill is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrillCheck {
    /// Whether one passed within the limit.
    pub ok: bool,
    /// The backup of the last drill that passed.
    pub backup_id: Option<String>,
    /// When that drill ran.
    pub timestamp: Option<u64>,
    /// Its age at `now`.
    pub age_seconds: Option<u64>,
    /// The limit.
    pub max_age_seconds: u64,
    /// Drills that failed after it (or at all, when none passed).
    pub failed_since: u64,
    /// What is wrong, in words, when not ok.
    pub problem: Option<String>,
}

/// How far behind the continuous archive is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveCheck {
    /// Whether it is within the limit.
    pub ok: bool,
    /// The newest timeline.
    pub timeline: Option<String>,
    /// The last frame stored.
    pub last_seq: u64,
    /// Seconds since its archiver last reported (its heartbeat).
    pub heartbeat_age_seconds: Option<u64>,
    /// The delay: the age of the oldest frame of the data dir not yet stored (with a data
    /// dir), else what the archiver last reported.
    pub lag_seconds: Option<u64>,
    /// The limit.
    pub max_lag_seconds: u64,
    /// What is wrong, in words, when not ok.
    pub problem: Option<String>,
}

/// What `check` found. `ok` is false when any limit asked for is not met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Whether every limit asked for is met.
    pub ok: bool,
    /// The newest backup.
    pub newest_id: Option<String>,
    /// When it was taken.
    pub newest_timestamp: Option<u64>,
    /// Its age at `now`.
    pub age_seconds: Option<u64>,
    /// The limit on the newest backup's age.
    pub max_age_seconds: Option<u64>,
    /// The continuous archive's delay, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveCheck>,
    /// The last passed restore drill, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillCheck>,
}

/// Checks the newest backup of the repository at `backup_dir` against `opts.max_age` at
/// `now`. A directory without a repository has no backup (not ok).
///
/// # Errors
///
/// [`crate::Error::NotARepository`] when `backup_dir` is not a directory; damage to the
/// repository's marker.
pub fn check(backup_dir: impl Into<RepoRef>, opts: &CheckOptions, now: Now) -> Result<CheckReport> {
    let backup_dir = &backup_dir.into();
    let listing = listing_of(backup_dir)?;
    let newest = listing.backups.first();
    let age = newest.map(|b| now.secs.saturating_sub(b.manifest.timestamp));
    let archive = match opts.max_lag {
        Some(max) => Some(check_archive(
            backup_dir,
            max,
            opts.data_dir.as_deref(),
            now,
        )?),
        None => None,
    };
    let drill = match opts.max_drill_age {
        Some(max) => Some(check_drills(backup_dir, max, now)?),
        None => None,
    };
    let age_ok = opts
        .max_age
        .is_none_or(|max| age.is_some_and(|age| age <= max));
    Ok(CheckReport {
        ok: age_ok && archive.as_ref().is_none_or(|a| a.ok) && drill.as_ref().is_none_or(|d| d.ok),
        newest_id: newest.map(|b| b.manifest.id.clone()),
        newest_timestamp: newest.map(|b| b.manifest.timestamp),
        age_seconds: age,
        max_age_seconds: opts.max_age,
        archive,
        drill,
    })
}

/// Finds the last drill that passed (from the records' names; the one relied on is read to
/// confirm it says so) and compares its age with `max`.
fn check_drills(location: &RepoRef, max: u64, now: Now) -> Result<DrillCheck> {
    let mut out = DrillCheck {
        ok: false,
        backup_id: None,
        timestamp: None,
        age_seconds: None,
        max_age_seconds: max,
        failed_since: 0,
        problem: None,
    };
    let repo = match location.open() {
        Ok(r) => r,
        Err(Error::NotARepository(_)) => {
            out.problem = Some("no restore drill has run on this repository".into());
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    let keys = repo.drill_keys()?;
    let last_passed = keys.iter().rev().find(|k| k.passed);
    out.failed_since = keys
        .iter()
        .filter(|k| {
            !k.passed && last_passed.is_none_or(|p| (k.timestamp, k.nanos) > (p.timestamp, p.nanos))
        })
        .count() as u64;
    let Some(key) = last_passed else {
        out.problem = Some(if keys.is_empty() {
            "no restore drill has run on this repository".into()
        } else {
            format!("none of the {} restore drills passed", keys.len())
        });
        return Ok(out);
    };
    let record = repo.load_drill(key)?;
    let age = now.secs.saturating_sub(record.timestamp);
    out.backup_id = Some(record.backup_id);
    out.timestamp = Some(record.timestamp);
    out.age_seconds = Some(age);
    if age > max {
        out.problem = Some(format!("the last restore drill that passed ran {age}s ago"));
    }
    out.ok = out.problem.is_none();
    Ok(out)
}

fn check_archive(
    location: &RepoRef,
    max: u64,
    data_dir: Option<&Path>,
    now: Now,
) -> Result<ArchiveCheck> {
    let mut out = ArchiveCheck {
        ok: false,
        timeline: None,
        last_seq: 0,
        heartbeat_age_seconds: None,
        lag_seconds: None,
        max_lag_seconds: max,
        problem: None,
    };
    let repo = match location.open() {
        Ok(r) => r,
        Err(Error::NotARepository(_)) => {
            out.problem = Some("the repository holds no archived WAL".into());
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    let timelines = repo.archive_timelines()?;
    let Some(tl) = timelines.last() else {
        out.problem = Some("the repository holds no archived WAL".into());
        return Ok(out);
    };
    out.timeline = Some(tl.id.to_string());
    out.last_seq = tl.newest_seq();
    let observed = tl.observed.as_ref();
    out.heartbeat_age_seconds = observed.map(|o| now.secs.saturating_sub(o.written_at));
    out.lag_seconds = observed.map(|o| o.lag_seconds);
    let mut compared = None;
    if let Some(dir) = data_dir {
        match unarchived_age(&repo, tl, dir, now) {
            Ok(l) => out.lag_seconds = Some(l),
            Err(e) => compared = Some(e.to_string()),
        }
    }
    out.problem = match (out.heartbeat_age_seconds, out.lag_seconds) {
        _ if compared.is_some() => compared,
        (None, _) => Some("no archiver has reported on the newest timeline".into()),
        (Some(h), _) if h > max => Some(format!("no archiver has reported for {h}s")),
        (_, Some(l)) if l > max => Some(format!(
            "the oldest WAL frame not yet archived was written {l}s ago"
        )),
        _ => None,
    };
    out.ok = out.problem.is_none();
    Ok(out)
}

/// Age in seconds of the oldest frame of the data dir the archive does not hold yet (0 when
/// it holds every one). A data dir whose history is not the archived one is an error.
fn unarchived_age(
    repo: &Repository,
    tl: &kyrodb_backup_storage::ArchivedTimeline,
    dir: &Path,
    now: Now,
) -> Result<u64> {
    let newest = tl.pieces.iter().max_by_key(|p| p.name.last_seq);
    let resume = match (newest, tl.observed.as_ref()) {
        (Some(p), Some(o)) if o.last_seq >= p.name.last_seq => Resume {
            seq: o.last_seq,
            crc: o.last_crc,
        },
        (Some(p), _) => Resume {
            seq: p.name.last_seq,
            crc: repo.read_piece(&p.key, &p.name)?.last_crc,
        },
        (None, Some(o)) => Resume {
            seq: o.last_seq,
            crc: o.last_crc,
        },
        (None, None) => return Ok(0),
    };
    let (mut follower, start) = Follower::start(dir, Some(resume))?;
    if !matches!(start, Start::Continues) {
        return Err(Error::Damaged(format!(
            "{}: its WAL does not continue the archived timeline {}",
            dir.display(),
            tl.id
        )));
    }
    let mut buf = Vec::new();
    let poll = follower.poll(&mut buf, 1)?;
    Ok(poll
        .batch
        .map_or(0, |b| now.secs.saturating_sub(b.first_ts)))
}
