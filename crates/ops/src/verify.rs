//! `verify`: every stored byte of backups re-read, re-hashed and decoded.

use crate::access::RepoRef;
use std::path::PathBuf;

use kyrodb_backup_storage::{Progress, Repository, StoredBackup};
use kyrodb_backup_verify::{verify_backup, BackupCheck, Problem};
use serde::Serialize;

use crate::catalog::{check_builtin, open_repo, BuiltinBackup, Catalog};
use crate::error::{Error, Result};

/// What `verify` is asked to do.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// One backup (id or unique prefix); `None` verifies every backup of both kinds.
    pub id: Option<String>,
}

impl VerifyOptions {
    /// Verifies every backup.
    pub fn all() -> Self {
        Self { id: None }
    }

    /// Verifies one backup.
    pub fn one(id: impl Into<String>) -> Self {
        Self {
            id: Some(id.into()),
        }
    }
}

/// A manifest that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// Its path.
    pub path: PathBuf,
    /// Why.
    pub problem: String,
}

/// The check of one of the built-in tool's backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuiltinCheck {
    /// Backup id.
    pub id: String,
    /// Whether it restores.
    pub ok: bool,
    /// Live documents its chain recovers to.
    pub vector_count: Option<u64>,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

/// What `verify` found. `ok` is false when anything is damaged.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Whether every backup checked is sound.
    pub ok: bool,
    /// This tool's backups.
    pub backups: Vec<BackupCheck>,
    /// Manifests that cannot be read.
    pub unreadable: Vec<Unreadable>,
    /// The built-in tool's backups.
    pub builtin: Vec<BuiltinCheck>,
    /// The continuous archive's timelines (when verifying everything).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub archive: Vec<TimelineCheck>,
    /// Metadata of built-in backups that cannot be read, one line each.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The check of one timeline of the continuous archive: every piece read, its checksum and
/// every frame's CRC checked; every base's chunks read and hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineCheck {
    /// The timeline.
    pub timeline: String,
    /// Whether every object is sound.
    pub ok: bool,
    /// Pieces checked.
    pub pieces: u64,
    /// Frames in them.
    pub frames: u64,
    /// Bases checked.
    pub bases: u64,
    /// What is wrong, naming the object.
    pub problems: Vec<Problem>,
}

/// Checks every object of every timeline. Objects a merge or prune deleted meanwhile are
/// skipped (they are gone, not damaged).
fn verify_archive(repo: &Repository) -> Result<Vec<TimelineCheck>> {
    let mut out = Vec::new();
    for tl in repo.archive_timelines()? {
        let mut c = TimelineCheck {
            timeline: tl.id.to_string(),
            ok: true,
            pieces: 0,
            frames: 0,
            bases: 0,
            problems: Vec::new(),
        };
        let gone =
            |key: &str| matches!(repo.backend().read_head(key, 0), Err(e) if e.is_not_found());
        for p in &tl.pieces {
            match repo.read_piece(&p.key, &p.name) {
                Ok(piece) => {
                    c.pieces += 1;
                    c.frames += piece.frames.len() as u64;
                }
                Err(kyrodb_backup_storage::Error::Backend(e)) => {
                    return Err(kyrodb_backup_storage::Error::Backend(e).into())
                }
                Err(_) if gone(&p.key) => {}
                Err(e) => c.problems.push(Problem {
                    file: Some(repo.object_name(&p.key)),
                    message: e.to_string(),
                }),
            }
        }
        let store = repo.archive_store(tl.id);
        for b in &tl.bases {
            let checked = repo.load_base(b).and_then(|m| {
                for f in &m.files {
                    std::io::copy(&mut store.reader(f), &mut std::io::sink()).map_err(|e| {
                        kyrodb_backup_storage::Error::Damaged(format!("{}: {e}", f.name))
                    })?;
                }
                Ok(())
            });
            match checked {
                Ok(()) => c.bases += 1,
                Err(_) if gone(&b.key) => {}
                Err(e) => c.problems.push(Problem {
                    file: Some(repo.object_name(&b.key)),
                    message: e.to_string(),
                }),
            }
        }
        if let Some(failure) = store.store_failure() {
            return Err(Error::Unavailable(failure));
        }
        c.ok = c.problems.is_empty();
        out.push(c);
    }
    Ok(out)
}

/// Verifies one backup or all of them (this tool's and the built-in tool's), under a shared
/// repository lock. Damage is reported, not returned as an error.
///
/// # Errors
///
/// [`Error::NotARepository`], [`Error::Locked`] (while a create or prune runs),
/// [`Error::NotFound`] and the other id errors.
pub fn verify(
    backup_dir: impl Into<RepoRef>,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let backup_dir = &backup_dir.into();
    let catalog = Catalog::builtin_only(backup_dir);
    // A backup dir may hold only the built-in tool's backups: then there is no repository.
    let repo = if catalog.builtin.is_empty() || backup_dir.as_local().is_none_or(Repository::exists)
    {
        Some(open_repo(backup_dir)?)
    } else {
        None
    };
    let (targets, unreadable, builtin_targets): (Vec<StoredBackup>, _, Vec<&BuiltinBackup>) =
        match (&opts.id, &repo) {
            (Some(id), _) if catalog.find_builtin(id).is_some() => (
                Vec::new(),
                Vec::new(),
                catalog.find_builtin(id).into_iter().collect(),
            ),
            (Some(id), Some(repo)) => (vec![repo.find(id)?], Vec::new(), Vec::new()),
            (Some(id), None) => return Err(Error::NotFound(id.clone())),
            (None, Some(repo)) => {
                let l = repo.list()?;
                (l.backups, l.problems, catalog.builtin.iter().collect())
            }
            (None, None) => (Vec::new(), Vec::new(), catalog.builtin.iter().collect()),
        };
    let backups: Vec<BackupCheck> = targets
        .iter()
        .map(|b| {
            verify_backup(
                repo.as_ref().expect("our backups come from a repository"),
                b,
                progress,
            )
        })
        .collect();
    // A backup that a prune deleted while it was read shows as missing chunks: it is gone, not
    // damaged (its manifest no longer exists), so it is left out with a warning.
    let mut vanished = Vec::new();
    let backups: Vec<BackupCheck> = backups
        .into_iter()
        .zip(&targets)
        .filter_map(|(check, b)| {
            let m = &b.manifest;
            let gone = !check.ok
                && repo
                    .as_ref()
                    .is_some_and(|r| matches!(r.has_manifest(&m.chain_id, &m.id), Ok(false)));
            if gone {
                vanished.push(format!(
                    "backup {} was deleted by a prune while verify read it",
                    m.id
                ));
                None
            } else {
                Some(check)
            }
        })
        .collect();
    // A store that failed under the checks (unreachable, denied) leaves them incomplete: that
    // is a failure to check, not damage found.
    if let Some(failure) = backups.iter().find_map(|c| c.store_failure.clone()) {
        return Err(Error::Unavailable(failure));
    }
    let builtin: Vec<BuiltinCheck> = builtin_targets
        .iter()
        .map(|b| match check_builtin(b, &catalog.builtin) {
            Ok(n) => BuiltinCheck {
                id: b.meta.id.clone(),
                ok: true,
                vector_count: Some(n),
                problems: Vec::new(),
            },
            Err(e) => BuiltinCheck {
                id: b.meta.id.clone(),
                ok: false,
                vector_count: None,
                problems: vec![Problem {
                    file: None,
                    message: e.to_string(),
                }],
            },
        })
        .collect();
    let unreadable: Vec<Unreadable> = unreadable
        .into_iter()
        .map(|(path, e)| Unreadable {
            path,
            problem: e.to_string(),
        })
        .collect();
    let archive = match (&opts.id, &repo) {
        (None, Some(repo)) => verify_archive(repo)?,
        _ => Vec::new(),
    };
    Ok(VerifyReport {
        ok: unreadable.is_empty()
            && backups.iter().all(|c| c.ok)
            && builtin.iter().all(|c| c.ok)
            && archive.iter().all(|c| c.ok),
        archive,
        backups,
        unreadable,
        builtin,
        warnings: catalog.warnings.into_iter().chain(vanished).collect(),
    })
}
