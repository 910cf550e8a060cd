//! Deleting backups and the chunks no remaining backup needs, in an order that survives a kill
//! at any instant, beside creates that run at the same time.

use std::collections::{BTreeMap, BTreeSet};

use kyrodb_backup_format::repo::{is_backup_id, ContentHash};

use crate::error::Result;
use crate::lease::create_leases;
use crate::repository::Repository;

/// What a prune deleted (or, dry, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Backups whose manifests were deleted.
    pub deleted_backups: Vec<String>,
    /// Backups that were to be deleted but were left because a create writes to their chain.
    pub left_busy: Vec<String>,
    /// Chunk objects deleted because no remaining manifest names them.
    pub deleted_chunks: u64,
    /// Bytes of manifests and chunks freed.
    pub bytes_freed: u64,
    /// Chains removed whole (no backup of theirs remains).
    pub chains_removed: Vec<String>,
    /// Chains whose chunks were left alone, with why: one of their manifests cannot be read
    /// (its chunks are unknown, so none may be called unreferenced), or a create is writing
    /// to them.
    pub chains_not_collected: Vec<(String, String)>,
    /// Leases of creates that finished or are gone, removed.
    pub stale_leases_removed: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Deletes the backups `ids` and then every chunk no remaining manifest of its chain needs.
/// The caller holds the prune lease (`lease_for_prune`); `now` (Unix seconds) judges the
/// leases of creates on other hosts.
///
/// Order, so that a kill at any instant leaves every other backup restorable and the next
/// prune finishes the job, and so that no running create loses a chunk:
/// (1) the create leases are read: a chain a live create writes to is left whole (its
/// manifests and its chunks, even chunks no manifest names yet); (2) the manifests are listed,
/// after the leases, so a create that finished before is seen by its manifest; (3) the pruned
/// manifests are deleted: from then on those backups do not exist; (4) per chain, the chunks
/// named by no remaining manifest are deleted; a chain left without manifests goes whole. A
/// manifest never points at a deleted chunk, because chunks go only after every manifest
/// naming them. Chunks written by a killed `create` (named by no manifest) are collected the
/// same way once its lease is stale.
///
/// # Errors
///
/// When a manifest or chunk cannot be deleted (say, credentials that may not delete); what was
/// deleted stays deleted, and the next prune finishes the job.
pub fn prune_backups(
    repo: &Repository,
    ids: &[String],
    dry_run: bool,
    now: u64,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    let backend = repo.backend();
    // (1) leases, then (2) manifests.
    let leases = create_leases(backend.as_ref(), now, &|chain, id| {
        repo.has_manifest(chain, id).unwrap_or(false)
    })?;
    let listing = repo.list()?;
    let doomed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    // (3) manifests
    for b in &listing.backups {
        let m = &b.manifest;
        if !doomed.contains(m.id.as_str()) {
            continue;
        }
        if leases.is_busy(&m.chain_id) {
            report.left_busy.push(m.id.clone());
            continue;
        }
        report.bytes_freed += b.manifest_bytes;
        if !dry_run {
            backend.delete(&Repository::manifest_key(&m.chain_id, &m.id))?;
        }
        tracing::debug!(id = %m.id, dry_run, "manifest deleted");
        report.deleted_backups.push(m.id.clone());
    }
    backend.sync()?;
    let deleted: BTreeSet<&str> = report.deleted_backups.iter().map(String::as_str).collect();
    // (4) chunks, per chain
    let mut needed: BTreeMap<String, BTreeSet<ContentHash>> = BTreeMap::new();
    for b in &listing.backups {
        let m = &b.manifest;
        let set = needed.entry(m.chain_id.clone()).or_default();
        if !deleted.contains(m.id.as_str()) {
            set.extend(m.chunk_refs().into_iter().map(|c| c.hash));
        }
    }
    let unreadable: BTreeMap<String, String> = listing
        .problems
        .iter()
        .filter_map(|(path, e)| {
            let chain = chain_of(path)?;
            Some((chain, e.to_string()))
        })
        .collect();
    for chain_id in backend.list_folders("chains/")? {
        if !is_backup_id(&chain_id) {
            continue;
        }
        if leases.is_busy(&chain_id) {
            report
                .chains_not_collected
                .push((chain_id, "a create is writing to this chain".into()));
            continue;
        }
        if let Some(why) = unreadable.get(&chain_id) {
            report.chains_not_collected.push((chain_id, why.clone()));
            continue;
        }
        let keep = needed.get(&chain_id);
        if keep.is_none_or(BTreeSet::is_empty) && !has_manifests(repo, &chain_id, dry_run, &doomed)?
        {
            for e in backend.list(&format!("chains/{chain_id}/"))? {
                report.bytes_freed += e.size;
                if !dry_run {
                    backend.delete(&e.key)?;
                }
            }
            report.chains_removed.push(chain_id);
            continue;
        }
        let empty = BTreeSet::new();
        let keep = keep.unwrap_or(&empty);
        for e in backend.list(&format!("chains/{chain_id}/chunks/"))? {
            let name = e.key.rsplit('/').next().unwrap_or_default();
            let Ok(hash) = name.parse::<ContentHash>() else {
                continue;
            };
            if keep.contains(&hash) {
                continue;
            }
            report.bytes_freed += e.size;
            report.deleted_chunks += 1;
            if !dry_run {
                backend.delete(&e.key)?;
            }
        }
    }
    backend.sync()?;
    if !dry_run {
        for key in &leases.stale {
            backend.delete(key)?;
            report.stale_leases_removed += 1;
        }
        backend.sync()?;
    }
    Ok(report)
}

/// The chain a manifest's path or URL belongs to (`…/chains/<chain>/manifests/<id>.manifest`).
fn chain_of(path: &std::path::Path) -> Option<String> {
    let manifests = path.parent()?;
    Some(
        manifests
            .parent()?
            .file_name()?
            .to_string_lossy()
            .into_owned(),
    )
}

/// Whether a chain still has manifests (in a dry run, ignoring the ones to be deleted).
fn has_manifests(
    repo: &Repository,
    chain_id: &str,
    dry_run: bool,
    doomed: &BTreeSet<&str>,
) -> Result<bool> {
    let prefix = format!("chains/{chain_id}/manifests/");
    Ok(repo.backend().list(&prefix)?.iter().any(|e| {
        let name = e.key.strip_prefix(&prefix).unwrap_or(&e.key);
        let id = name.strip_suffix(".manifest").unwrap_or(name);
        !(dry_run && doomed.contains(id))
    }))
}
