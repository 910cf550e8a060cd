//! `create`: a full or incremental backup of a data directory.

use crate::access::RepoRef;
use std::path::PathBuf;

use kyrodb_backup_format::repo::SkippedFile;
use kyrodb_backup_storage::{create_backup, Progress, StoreStats};
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
    /// Read and chunk the data dir and report what the backup would add to the repository,
    /// writing nothing (so a wrapper can check free space first).
    pub dry_run: bool,
}

impl CreateOptions {
    /// A full backup of `data_dir` with a new random id and no description.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            reference: None,
            description: String::new(),
            id: uuid::Uuid::new_v4().to_string(),
            dry_run: false,
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
    /// Whether this was a dry run (nothing was written; `stored_bytes` is what the backup
    /// would add, its manifest included).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
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
    backup_dir: impl Into<RepoRef>,
    opts: &CreateOptions,
    now: Now,
    progress: &dyn Progress,
) -> Result<CreateReport> {
    let backup_dir = &backup_dir.into();
    let (repo, leftovers_removed) = if opts.dry_run {
        (backup_dir.open_for_preview()?, 0)
    } else {
        let repo = backup_dir.open_or_init()?;
        let leftovers = repo.remove_leftovers(now.system_time())?;
        (repo, leftovers)
    };
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
            dry_run: opts.dry_run,
        },
        progress,
    )?;
    let m = &report.backup.manifest;
    let mut backup = BackupSummary::of(&report.backup);
    if opts.dry_run {
        backup.stored_bytes += report.backup.manifest_bytes;
    }
    Ok(CreateReport {
        backup,
        dry_run: opts.dry_run,
        skipped: m.skipped.clone(),
        files: m.files.len(),
        source: m.source.clone(),
        stats: report.stats,
        leftovers_removed,
    })
}
