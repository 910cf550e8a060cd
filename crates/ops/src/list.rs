//! `list` and `show`: what a backup directory holds.

use crate::access::RepoRef;
use std::collections::BTreeMap;
use std::path::PathBuf;

use kyrodb_backup_chain::{recoverable_windows, timeline_gaps, timeline_windows, Window};
use kyrodb_backup_format::repo::{ContentHash, FileKind, SkippedFile};
use kyrodb_backup_storage::{DrillKey, StoredBackup};
use serde::Serialize;

use crate::catalog::{
    builtin_chain, builtin_state, chain_view, members, open_repo, timeline_view, Catalog,
};
use crate::error::Result;
use crate::model::{BackupSummary, ChainLink, FileSize, LastDrill};

/// Every backup in a backup directory, newest first. Serialized, it is a JSON array.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct ListReport {
    /// The backups, newest first (this tool's and the built-in tool's).
    pub backups: Vec<BackupSummary>,
    /// What could not be read, one line each.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// The continuous archive's timelines, oldest first (not part of the JSON array: `show
    /// <timeline>` gives each in full).
    #[serde(skip)]
    pub timelines: Vec<TimelineReport>,
}

/// One timeline of the continuous archive.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    /// Its id (`<started at>-<tag>`).
    pub timeline: String,
    /// The Unix second it started: no second before it is restored from it.
    pub started_at: u64,
    /// Its bases (snapshots), oldest first.
    pub bases: Vec<TimelineBase>,
    /// Pieces of WAL frames stored.
    pub pieces: usize,
    /// Their bytes.
    pub piece_bytes: u64,
    /// The first and last frame stored.
    pub first_seq: Option<u64>,
    /// The last frame stored.
    pub last_seq: Option<u64>,
    /// The archiver's last word: when it reported, how far behind it was.
    pub heartbeat: Option<kyrodb_backup_storage::ObservedRecord>,
    /// The seconds it restores exactly, oldest first.
    pub recoverable_windows: Vec<Window>,
    /// The seconds from its start to its last recoverable one that it cannot restore:
    /// frames compacted away while no archiver ran.
    pub gaps: Vec<Window>,
}

/// A base of a timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineBase {
    /// Its id.
    pub id: String,
    /// When the engine took its snapshot.
    pub snapshot_timestamp: u64,
    /// The last WAL frame the snapshot holds.
    pub last_wal_seq: u64,
}

/// What the continuous archive of a repository holds, per timeline.
pub(crate) fn timeline_reports(
    repo: &kyrodb_backup_storage::Repository,
) -> Result<Vec<TimelineReport>> {
    Ok(repo
        .archive_timelines()?
        .iter()
        .map(|t| {
            let view = timeline_view(t);
            TimelineReport {
                timeline: t.id.to_string(),
                started_at: t.id.started_at,
                bases: t
                    .bases
                    .iter()
                    .map(|b| TimelineBase {
                        id: b.name.id.clone(),
                        snapshot_timestamp: b.name.snapshot_ts,
                        last_wal_seq: b.name.last_wal_seq,
                    })
                    .collect(),
                pieces: t.pieces.len(),
                piece_bytes: t.pieces.iter().map(|p| p.size).sum(),
                first_seq: t.pieces.iter().map(|p| p.name.first_seq).min(),
                last_seq: t.pieces.iter().map(|p| p.name.last_seq).max(),
                heartbeat: t.observed.clone(),
                recoverable_windows: timeline_windows(&view),
                gaps: timeline_gaps(&view),
            }
        })
        .collect())
}

/// Lists the backups of `backup_dir`. A directory without a repository lists none.
///
/// # Errors
///
/// [`crate::Error::NotARepository`] when `backup_dir` is not a directory.
pub fn list(backup_dir: impl Into<RepoRef>) -> Result<ListReport> {
    let backup_dir = &backup_dir.into();
    let catalog = Catalog::read(backup_dir)?;
    let (mut backups, unreadable) = catalog.summaries();
    let mut warnings = catalog.warnings;
    warnings.extend(unreadable);
    let timelines = match open_repo(backup_dir) {
        Ok(repo) => {
            match repo.drill_keys() {
                Ok(keys) => {
                    // Oldest first: the last one of each backup stays.
                    let last: BTreeMap<&str, &DrillKey> =
                        keys.iter().map(|k| (k.backup_id.as_str(), k)).collect();
                    for b in &mut backups {
                        b.last_drill = last.get(b.id.as_str()).map(|k| LastDrill::of_key(k));
                    }
                }
                Err(e) => warnings.push(format!("the drill records cannot be listed: {e}")),
            }
            timeline_reports(&repo).unwrap_or_else(|e| {
                warnings.push(format!("the continuous archive cannot be listed: {e}"));
                Vec::new()
            })
        }
        Err(_) => Vec::new(),
    };
    Ok(ListReport {
        backups,
        warnings,
        timelines,
    })
}

/// A stored file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShownFile {
    /// Its name in the data directory.
    pub name: String,
    /// MANIFEST, snapshot or WAL segment.
    pub kind: FileKind,
    /// Its size.
    pub size: u64,
    /// XXH3-128 of its bytes.
    pub hash: ContentHash,
    /// Chunks it is stored in.
    pub chunks: usize,
}

/// The seconds a chain can be restored to, or why that cannot be said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Windows {
    /// Recoverable windows, oldest first (`to == u64::MAX`: open-ended).
    Known(Vec<Window>),
    /// Why none can be computed.
    Unknown(String),
}

/// One of this tool's backups in full.
#[derive(Debug, Clone, Serialize)]
pub struct ShowReport {
    /// The backup object.
    #[serde(flatten)]
    pub backup: BackupSummary,
    /// The data directory it was taken of.
    pub source: String,
    /// Version of the tool that took it.
    pub tool_version: String,
    /// Its files.
    pub files: Vec<ShownFile>,
    /// Files of the data dir it left out, with why.
    pub skipped: Vec<SkippedFile>,
    /// The seconds its chain can be restored to.
    pub recoverable_windows: Windows,
    /// Its chain, oldest first.
    pub chain: Vec<ChainLink>,
}

/// A backup of the engine's built-in tool in full.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltinShowReport {
    /// The backup object.
    #[serde(flatten)]
    pub backup: BackupSummary,
    /// The archive's members.
    pub files: Vec<FileSize>,
    /// The archives that rebuild it, oldest first.
    pub chain: Vec<ChainLink>,
    /// The archive.
    #[serde(skip)]
    pub archive: PathBuf,
}

/// What `show` found.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum Shown {
    /// One of this tool's backups.
    Repository(ShowReport),
    /// One of the built-in tool's.
    Builtin(BuiltinShowReport),
    /// A timeline of the continuous archive.
    Timeline(TimelineReport),
}

/// Shows one backup (id or unique prefix of 8+ characters) of either kind.
///
/// # Errors
///
/// [`crate::Error::NotFound`], [`crate::Error::Ambiguous`], [`crate::Error::PrefixTooShort`];
/// [`crate::Error::Damaged`] for a damaged archive or manifest.
pub fn show(backup_dir: impl Into<RepoRef>, id: &str) -> Result<Shown> {
    let backup_dir = &backup_dir.into();
    let catalog = Catalog::builtin_only(backup_dir);
    if let Some(b) = catalog.find_builtin(id) {
        let chain = builtin_chain(b, &catalog.builtin)?;
        return Ok(Shown::Builtin(BuiltinShowReport {
            backup: BackupSummary::of_builtin(b, builtin_state(b, &catalog.builtin).ok()),
            files: members(&b.archive)?
                .into_iter()
                .map(|m| FileSize {
                    name: m.name,
                    size: m.len,
                })
                .collect(),
            chain: chain
                .iter()
                .map(|c| ChainLink {
                    id: c.meta.id.clone(),
                    timestamp: c.meta.timestamp,
                    backup_type: c.meta.backup_type.clone(),
                })
                .collect(),
            archive: b.archive.clone(),
        }));
    }
    if kyrodb_backup_format::repo::TimelineId::parse(id).is_some() {
        let repo = open_repo(backup_dir)?;
        return timeline_reports(&repo)?
            .into_iter()
            .find(|t| t.timeline == id)
            .map(Shown::Timeline)
            .ok_or_else(|| crate::Error::NotFound(id.to_string()));
    }
    // One listing serves both the lookup and the chain.
    let repo = open_repo(backup_dir)?;
    let listing = repo.list()?;
    let b = listing.find(id)?;
    let last_drill = repo
        .drill_keys_of(&b.manifest.id)?
        .last()
        .map(|k| match repo.load_drill(k) {
            Ok(r) => LastDrill::of_record(&r),
            Err(e) => LastDrill {
                problem: Some(format!("its record cannot be read: {e}")),
                ..LastDrill::of_key(k)
            },
        });
    let mut chain: Vec<StoredBackup> = listing
        .backups
        .into_iter()
        .filter(|o| o.manifest.chain_id == b.manifest.chain_id)
        .collect();
    chain.reverse();
    let views: Vec<_> = chain.iter().map(|c| chain_view(&c.manifest)).collect();
    let m = &b.manifest;
    let mut backup = BackupSummary::of(&b);
    backup.last_drill = last_drill;
    Ok(Shown::Repository(ShowReport {
        backup,
        source: m.source.clone(),
        tool_version: m.tool_version.clone(),
        files: m
            .files
            .iter()
            .map(|f| ShownFile {
                name: f.name.clone(),
                kind: f.kind,
                size: f.size,
                hash: f.hash,
                chunks: f.chunks.len(),
            })
            .collect(),
        skipped: m.skipped.clone(),
        recoverable_windows: match recoverable_windows(&views) {
            Ok(w) => Windows::Known(w),
            Err(e) => Windows::Unknown(e.to_string()),
        },
        chain: chain
            .iter()
            .map(|c| ChainLink {
                id: c.manifest.id.clone(),
                timestamp: c.manifest.timestamp,
                backup_type: c.manifest.backup_type.to_string(),
            })
            .collect(),
    }))
}
