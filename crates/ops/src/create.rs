//! `create`: a full or incremental backup of a data directory.

use crate::access::RepoRef;
use std::path::PathBuf;

use kyrodb_backup_datadir::golden::GoldenOptions;
use kyrodb_backup_format::repo::SkippedFile;
use kyrodb_backup_storage::{create_backup, GoldenOutcome, Progress, StoreStats};
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
    /// Golden queries to record with the backup; `None` takes the repository's default
    /// ([`crate::config`]), `Some(0)` records none.
    pub golden: Option<usize>,
    /// Results per golden query.
    pub golden_k: usize,
    /// At most this many bytes of vectors are searched by the golden queries: above it, they
    /// search a sample of the documents (chosen by id hash, so a drill searches the same ones).
    /// It bounds both the memory and the time they take.
    pub golden_budget_bytes: u64,
}

/// Most golden queries a backup records.
pub const MAX_GOLDEN_QUERIES: usize = 1000;

/// Results per golden query unless told otherwise.
pub const GOLDEN_K: usize = 10;

/// Vector bytes the golden queries of a backup search at most, unless told otherwise.
pub const GOLDEN_BUDGET_BYTES: u64 = 64 << 20;

impl CreateOptions {
    /// A full backup of `data_dir` with a new random id and no description.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            reference: None,
            description: String::new(),
            id: uuid::Uuid::new_v4().to_string(),
            dry_run: false,
            golden: None,
            golden_k: GOLDEN_K,
            golden_budget_bytes: GOLDEN_BUDGET_BYTES,
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
    /// Seconds the golden queries took after the replay (the top-k pass and storing them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden_seconds: Option<f64>,
    /// Why golden queries that were asked for were not recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden_skipped: Option<String>,
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
            golden: golden_options(&repo, opts)?,
        },
        progress,
    )?;
    let (golden_seconds, golden_skipped) = match &report.golden {
        Some(GoldenOutcome::Recorded { seconds, .. }) => (Some(*seconds), None),
        Some(GoldenOutcome::Skipped(why)) => (None, Some(why.clone())),
        None => (None, None),
    };
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
        golden_seconds,
        golden_skipped,
    })
}

/// The golden queries to record: as asked, else the repository's default.
fn golden_options(
    repo: &kyrodb_backup_storage::Repository,
    opts: &CreateOptions,
) -> Result<Option<GoldenOptions>> {
    let queries = match opts.golden {
        Some(n) => n,
        None => usize::try_from(repo.settings()?.golden_queries).unwrap_or(usize::MAX),
    };
    if queries == 0 {
        return Ok(None);
    }
    if opts.golden_k == 0 || queries > MAX_GOLDEN_QUERIES {
        return Err(Error::InvalidOptions(format!(
            "golden queries: at most {MAX_GOLDEN_QUERIES}, with at least 1 result each"
        )));
    }
    // Each backup samples its own queries (the seed comes from its id), so a series of
    // backups and drills covers more of the data than one fixed set would.
    let hex: String = opts
        .id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    Ok(Some(GoldenOptions {
        queries,
        k: opts.golden_k,
        seed: u64::from_str_radix(&hex, 16).unwrap_or(42),
        distance: None,
        threads: crate::golden::threads(),
        budget_bytes: Some(opts.golden_budget_bytes),
    }))
}
