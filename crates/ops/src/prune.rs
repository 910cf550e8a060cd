//! `prune`: deleting the backups a retention policy does not keep.

use crate::access::RepoRef;

use kyrodb_backup_format::repo::BackupType;
use kyrodb_backup_retention::{plan, BackupInfo, RetentionPolicy};
use kyrodb_backup_storage::{lease_for_prune, prune_archive, prune_backups, ArchivePruneReport};
use serde::Serialize;

use crate::catalog::open_repo;
use crate::error::Result;
use crate::model::Now;

/// What `prune` is asked to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PruneOptions {
    /// Which backups to keep.
    pub policy: RetentionPolicy,
    /// Decide and report only; delete nothing.
    pub dry_run: bool,
    /// Keep every second of this many last seconds restorable from the continuous archive
    /// (`None`: the archive keeps what the oldest kept backup onward needs).
    pub keep_within: Option<u64>,
}

impl PruneOptions {
    /// Prunes by `policy`.
    pub fn new(policy: RetentionPolicy) -> Self {
        Self {
            policy,
            dry_run: false,
            keep_within: None,
        }
    }
}

/// A kept backup and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptBackup {
    /// Backup id.
    pub id: String,
    /// Unix second taken.
    pub timestamp: u64,
    /// Every reason it is kept (`newest`, `daily 2025-10-20`, `chain of <id>`, ...).
    pub reasons: Vec<String>,
}

/// A chain whose chunks were left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainNotCollected {
    /// The chain.
    pub chain_id: String,
    /// Why (one of its manifests cannot be read).
    pub reason: String,
}

/// What `prune` decided and did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Kept backups, newest first.
    pub kept: Vec<KeptBackup>,
    /// Ids of pruned backups, newest first.
    pub pruned: Vec<String>,
    /// Chains removed whole.
    pub chains_removed: Vec<String>,
    /// Chunk files deleted.
    pub deleted_chunks: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Chains whose chunks were not collected.
    pub chains_not_collected: Vec<ChainNotCollected>,
    /// Backups the policy would prune but that were left because a create is writing to
    /// their chain (the next prune takes them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
    /// What was removed from the continuous archive (absent when the repository has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchivePruneReport>,
    /// When each pruned backup was taken, in the order of `pruned`.
    #[serde(skip)]
    pub pruned_timestamps: Vec<u64>,
    /// Backups before pruning.
    #[serde(skip)]
    pub backups_before: usize,
    /// Manifests that cannot be read (left alone with their chain's chunks).
    #[serde(skip)]
    pub unreadable: Vec<crate::Unreadable>,
}

/// Applies `opts.policy` at `now` to the repository at `backup_dir`, holding the prune lease
/// (one prune at a time; chains that creates write to are left for the next prune):
/// the decision is `kyrodb_backup_retention::plan`'s, the deletion
/// `kyrodb_backup_storage::prune_backups`'s (crash-safe at any instant).
///
/// # Errors
///
/// [`crate::Error::NotARepository`], [`crate::Error::Locked`], I/O errors while deleting.
pub fn prune(backup_dir: impl Into<RepoRef>, opts: &PruneOptions, now: Now) -> Result<PruneReport> {
    let backup_dir = &backup_dir.into();
    let repo = open_repo(backup_dir)?;
    let _lease = if opts.dry_run {
        None
    } else {
        Some(lease_for_prune(repo.backend(), now.secs)?)
    };
    let listing = repo.list()?;
    let infos: Vec<BackupInfo> = listing
        .backups
        .iter()
        .map(|b| BackupInfo {
            id: b.manifest.id.clone(),
            chain_id: b.manifest.chain_id.clone(),
            timestamp: b.manifest.timestamp,
            subsec_nanos: b.manifest.subsec_nanos,
            full: b.manifest.backup_type == BackupType::Full,
        })
        .collect();
    let decided = plan(&infos, &opts.policy, now.secs);
    let done = prune_backups(&repo, &decided.pruned, opts.dry_run, now.secs)?;
    if !opts.dry_run {
        repo.remove_leftovers(now.system_time())?;
    }
    let pruned: Vec<String> = decided
        .pruned
        .iter()
        .filter(|id| !done.left_busy.contains(id))
        .cloned()
        .collect();
    let ts_of = |id: &str| infos.iter().find(|b| b.id == id).map_or(0, |b| b.timestamp);
    // The archive keeps the window asked for, or else what the oldest kept backup onward
    // needs; with neither (no backups kept, no window), it is left as it is.
    let window_from = opts.keep_within.map_or_else(
        || decided.kept.iter().map(|k| ts_of(&k.id)).min(),
        |d| Some(now.secs.saturating_sub(d)),
    );
    let archive = match window_from {
        Some(from) if repo.has_archive()? => {
            Some(prune_archive(&repo, from, now.secs, opts.dry_run)?)
        }
        _ => None,
    };
    Ok(PruneReport {
        archive,
        dry_run: opts.dry_run,
        kept: decided
            .kept
            .iter()
            .map(|k| KeptBackup {
                id: k.id.clone(),
                timestamp: ts_of(&k.id),
                reasons: k.reasons.clone(),
            })
            .collect(),
        pruned_timestamps: pruned.iter().map(|id| ts_of(id)).collect(),
        pruned,
        deferred: done.left_busy.clone(),
        chains_removed: done.chains_removed,
        deleted_chunks: done.deleted_chunks,
        bytes_freed: done.bytes_freed,
        chains_not_collected: done
            .chains_not_collected
            .into_iter()
            .map(|(chain_id, reason)| ChainNotCollected { chain_id, reason })
            .collect(),
        backups_before: infos.len(),
        unreadable: listing
            .problems
            .iter()
            .map(|(path, e)| crate::Unreadable {
                path: path.clone(),
                problem: e.to_string(),
            })
            .collect(),
    })
}
