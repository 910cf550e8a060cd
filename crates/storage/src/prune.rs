//! Deleting backups and the chunks no remaining backup needs, in an order that survives a kill
//! at any instant.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use kyrodb_backup_format::repo::{is_backup_id, ContentHash};

use crate::error::{Error, IoContext, Result};
use crate::repository::Repository;
use kyrodb_backup_durable::{fsync_dir, TMP_MARKER};

/// What a prune deleted (or, dry, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Backups whose manifests were deleted.
    pub deleted_backups: Vec<String>,
    /// Chunk files deleted because no remaining manifest names them.
    pub deleted_chunks: u64,
    /// Bytes of manifests, chunks and leftovers freed.
    pub bytes_freed: u64,
    /// Chains removed whole (no backup of theirs remains).
    pub chains_removed: Vec<String>,
    /// Chains whose chunks were left alone because one of their manifests cannot be read
    /// (its chunks are unknown, so none may be called unreferenced), with why.
    pub chains_not_collected: Vec<(String, String)>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

fn size_of(path: &Path) -> u64 {
    fs::symlink_metadata(path).map_or(0, |m| m.len())
}

/// Deletes the backups `ids` and then every chunk no remaining manifest of its chain needs.
///
/// Order, so that a kill at any instant leaves every other backup restorable and the next
/// prune finishes the job: (1) the pruned manifests are unlinked and their directories
/// fsynced: from then on those backups do not exist; (2) per chain, the chunks named by no
/// remaining manifest are deleted; a chain left without manifests is removed whole. A manifest
/// never points at a deleted chunk, because chunks go only after every manifest naming them.
/// Chunks written by a killed `create` (named by no manifest) are collected the same way.
/// The caller holds the exclusive repository lock, so no `create` adds chunks meanwhile.
///
/// # Errors
///
/// When a manifest or chunk cannot be deleted; what was deleted stays deleted, and the next prune
/// finishes the job.
pub fn prune_backups(repo: &Repository, ids: &[String], dry_run: bool) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    let listing = repo.list()?;
    let doomed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    // (1) manifests
    let mut touched_dirs = BTreeSet::new();
    for b in &listing.backups {
        let m = &b.manifest;
        if !doomed.contains(m.id.as_str()) {
            continue;
        }
        let path = repo.manifest_path(&m.chain_id, &m.id);
        report.bytes_freed += size_of(&path);
        if !dry_run {
            fs::remove_file(&path).at(&path)?;
            if let Some(dir) = path.parent() {
                touched_dirs.insert(dir.to_path_buf());
            }
        }
        tracing::debug!(id = %m.id, dry_run, "manifest deleted");
        report.deleted_backups.push(m.id.clone());
    }
    for dir in &touched_dirs {
        fsync_dir(dir)?;
    }
    // (2) chunks, per chain
    let mut needed: BTreeMap<String, BTreeSet<ContentHash>> = BTreeMap::new();
    for b in &listing.backups {
        let m = &b.manifest;
        let set = needed.entry(m.chain_id.clone()).or_default();
        if !doomed.contains(m.id.as_str()) {
            set.extend(m.chunk_refs().into_iter().map(|c| c.hash));
        }
    }
    let unreadable: BTreeMap<String, String> = listing
        .problems
        .iter()
        .filter_map(|(path, e)| {
            let chain = path
                .parent()?
                .parent()?
                .file_name()?
                .to_string_lossy()
                .into_owned();
            Some((chain, e.to_string()))
        })
        .collect();
    let chains_dir = repo.root().join("chains");
    let Ok(chains) = fs::read_dir(&chains_dir) else {
        return Ok(report);
    };
    for chain in chains {
        let chain = chain.at(&chains_dir)?;
        let chain_id = chain.file_name().to_string_lossy().into_owned();
        if !is_backup_id(&chain_id) || !chain.file_type().at(&chain.path())?.is_dir() {
            continue;
        }
        if let Some(why) = unreadable.get(&chain_id) {
            report.chains_not_collected.push((chain_id, why.clone()));
            continue;
        }
        let keep = needed.get(&chain_id);
        if keep.is_none_or(BTreeSet::is_empty) && !has_manifests(&chain.path(), dry_run, &doomed) {
            report.bytes_freed += tree_size(&chain.path());
            if !dry_run {
                fs::remove_dir_all(chain.path()).at(&chain.path())?;
            }
            report.chains_removed.push(chain_id);
            continue;
        }
        let empty = BTreeSet::new();
        collect_chunks(
            &chain.path().join("chunks"),
            keep.unwrap_or(&empty),
            dry_run,
            &mut report,
        )?;
    }
    if !dry_run && !report.chains_removed.is_empty() {
        fsync_dir(&chains_dir)?;
    }
    Ok(report)
}

/// Whether a chain still has manifests (in a dry run, ignoring the ones to be deleted).
fn has_manifests(chain: &Path, dry_run: bool, doomed: &BTreeSet<&str>) -> bool {
    let Ok(entries) = fs::read_dir(chain.join("manifests")) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name.strip_suffix(".manifest").unwrap_or(&name);
        !(dry_run && doomed.contains(id))
    })
}

fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += size_of(&e.path()),
                Err(_) => {}
            }
        }
    }
    total
}

fn collect_chunks(
    chunks: &Path,
    keep: &BTreeSet<ContentHash>,
    dry_run: bool,
    report: &mut PruneReport,
) -> Result<()> {
    let Ok(subdirs) = fs::read_dir(chunks) else {
        return Ok(());
    };
    for sub in subdirs {
        let sub = sub.at(chunks)?;
        let mut removed_any = false;
        let subpath: PathBuf = sub.path();
        if !sub.file_type().at(&subpath)?.is_dir() {
            continue;
        }
        for f in fs::read_dir(&subpath).at(&subpath)? {
            let f = f.at(&subpath)?;
            let name = f.file_name().to_string_lossy().into_owned();
            let is_leftover = name.contains(TMP_MARKER);
            let unneeded = match name.parse::<ContentHash>() {
                Ok(h) => !keep.contains(&h),
                Err(_) => is_leftover,
            };
            if !unneeded {
                continue;
            }
            report.bytes_freed += size_of(&f.path());
            if !is_leftover {
                report.deleted_chunks += 1;
            }
            if !dry_run {
                match fs::remove_file(f.path()) {
                    Ok(()) => removed_any = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(f.path(), e)),
                }
            }
        }
        if removed_any {
            fsync_dir(&subpath)?;
        }
    }
    Ok(())
}
