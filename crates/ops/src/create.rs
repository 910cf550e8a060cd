//! `create`: a full or incremental backup of a data directory.

use std::path::{Path, PathBuf};

use kyrodb_backup_format::repo::SkippedFile;
use kyrodb_backup_storage::{create_backup, LockMode, Progress, Repository, StoreStats};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{BackupSummary, Now};

/// Which backup an incremental is made against.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reference {
    /// The newest backup of the repository.
    Latest,
    /// A backup id or unique prefix (8+ characters).
    Id(String),
}

/// What `create` is asked to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CreateOptions {
    /// The data directory to back up.
    pub data_dir: PathBuf,
    /// For an incremental, the backup whose chain it joins; `None` for a full backup.
    pub reference: Option<Reference>,
    /// Free text stored with the backup.
    pub description: String,
    /// The new backup's id (a lower-case hyphenated UUID; [`CreateOptions::new`] makes a
    /// random one).
    pub id: String,
}

impl CreateOptions {
    /// A full backup of `data_dir` with a new random id and no description.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            reference: None,
            description: String::new(),
            id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// What `create` did. Serialized, it is the contract's backup object plus `skipped`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    /// The new backup.
    #[serde(flatten)]
    pub backup: BackupSummary,
    /// Files of the data dir that are not part of its state, with why.
    pub skipped: Vec<SkippedFile>,
    /// Files captured (the MANIFEST included).
    #[serde(skip)]
    pub files: usize,
    /// The data directory, as recorded.
    #[serde(skip)]
    pub source: String,
    /// Chunk counters.
    #[serde(skip)]
    pub stats: StoreStats,
    /// Temporary files of an interrupted earlier run that were removed first.
    #[serde(skip)]
    pub leftovers_removed: u64,
}

/// Takes a backup of `opts.data_dir` into the repository at `backup_dir` (made if missing),
/// under the repository's exclusive lock; see `kyrodb_backup_storage::create_backup` for how
/// a live directory is captured consistently.
///
/// # Errors
///
/// [`Error::Locked`] while another run writes, [`Error::NoBackupYet`] or [`Error::Reference`]
/// for an unusable reference, [`Error::DataDir`] for a directory that is not a data dir,
/// [`Error::Format`] for damaged data-dir files.
pub fn create(
    backup_dir: &Path,
    opts: &CreateOptions,
    now: Now,
    progress: &dyn Progress,
) -> Result<CreateReport> {
    let repo = Repository::open_or_init(backup_dir)?;
    let _lock = repo.lock(LockMode::Exclusive)?;
    let leftovers_removed = repo.remove_leftovers()?;
    let parent = match &opts.reference {
        None => None,
        Some(Reference::Latest) => Some(
            repo.list()?
                .backups
                .into_iter()
                .next()
                .ok_or(Error::NoBackupYet)?,
        ),
        Some(Reference::Id(r)) => Some(repo.find(r).map_err(|e| Error::Reference {
            reference: r.clone(),
            source: Box::new(e.into()),
        })?),
    };
    let report = create_backup(
        &repo,
        &kyrodb_backup_storage::CreateOptions {
            data_dir: opts.data_dir.clone(),
            id: opts.id.clone(),
            now: now.secs,
            now_subsec_nanos: now.nanos,
            description: opts.description.clone(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            parent: parent.map(|p| p.manifest),
        },
        progress,
    )?;
    let m = &report.backup.manifest;
    Ok(CreateReport {
        backup: BackupSummary::of(&report.backup),
        skipped: m.skipped.clone(),
        files: m.files.len(),
        source: m.source.clone(),
        stats: report.stats,
        leftovers_removed,
    })
}
