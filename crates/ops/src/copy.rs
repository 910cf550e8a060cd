//! `copy`: backups from one repository to another (local or object storage, either way), whole
//! chains in order, every chunk checked on the way, manifests last.

use std::collections::{BTreeMap, BTreeSet};

use crate::access::RepoRef;
use kyrodb_backup_format::repo::{
    BackupManifest, BackupType, ChunkRef, ContentHash, FileEntry, FileKind,
};
use kyrodb_backup_storage::{
    lease_for_create, parallel_map as parallel, ChainStore, NoProgress, Repository, StoredBackup,
    PRUNE_WAIT,
};
use serde::Serialize;

use crate::catalog::{open_repo, vanished};
use crate::error::{Error, Result};
use crate::model::Now;

/// What `copy` is asked to do.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Backups to copy, by id or unique prefix (with the backups they build on); empty with
    /// `all` for every backup.
    pub ids: Vec<String>,
    /// Copy every backup.
    pub all: bool,
}

impl CopyOptions {
    /// Copies every backup.
    pub fn all() -> Self {
        Self {
            ids: Vec::new(),
            all: true,
        }
    }

    /// Copies these backups and the backups they build on.
    pub fn ids(ids: Vec<String>) -> Self {
        Self { ids, all: false }
    }
}

/// One backup `copy` handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopiedBackup {
    /// The backup.
    pub id: String,
    /// Its chain.
    pub chain_id: String,
    /// `copied`, or `present` when the target had it already (same checksum).
    pub status: String,
}

/// What `copy` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Where from.
    pub from: String,
    /// Where to.
    pub to: String,
    /// Every backup handled, chain by chain, oldest first.
    pub backups: Vec<CopiedBackup>,
    /// Chunks written to the target.
    pub chunks_copied: u64,
    /// Chunks the target had.
    pub chunks_present: u64,
    /// Bytes written to the target (chunks and manifests).
    pub bytes_copied: u64,
    /// Requests sent to each store, by kind (object stores only).
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Copies backups from the repository at `from` to the one at `to` (made if missing). For each
/// chain, in order from its full backup: every chunk the target lacks is read, checked against
/// its hash and written create-only; then the manifest is written, create-only, last. A copy
/// that stops anywhere leaves the target's backups as they were (plus unreferenced chunks
/// that the next copy reuses and a prune collects); running it again finishes the job. The
/// target's chains are leased like a create's, so a prune there leaves them alone meanwhile.
///
/// # Errors
///
/// [`Error::NotFound`] and friends for ids that match no backup, [`Error::Damaged`] when a
/// source chunk or manifest does not check (nothing of that backup is committed), the stores'
/// errors.
pub fn copy(
    from: impl Into<RepoRef>,
    to: impl Into<RepoRef>,
    opts: &CopyOptions,
    now: Now,
) -> Result<CopyReport> {
    let (from, to) = (from.into(), to.into());
    if from == to {
        return Err(Error::InvalidOptions(
            "the source and the target are the same repository".into(),
        ));
    }
    if !opts.all && opts.ids.is_empty() {
        return Err(Error::InvalidOptions(
            "name the backups to copy, or copy them all".into(),
        ));
    }
    let source = open_repo(&from)?;
    let listing = source.list()?;
    if let Some((path, e)) = listing.problems.first() {
        if opts.all {
            return Err(Error::Damaged(format!("{}: {e}", path.display())));
        }
    }
    let wanted = selection(&listing, opts)?;
    let target = to.open_or_init()?;
    let mut report = CopyReport {
        from: source.location(),
        to: target.location(),
        backups: Vec::new(),
        chunks_copied: 0,
        chunks_present: 0,
        bytes_copied: 0,
        requests: BTreeMap::new(),
    };
    // Chains are independent: four at a time, each with eight chunks in flight, so at most
    // 32 chunks (128 MiB at the largest chunk size, 32 MiB on average) are held at once.
    let chains: Vec<(&String, &Vec<StoredBackup>)> = wanted.iter().collect();
    let copied = parallel(&chains, 4, |(chain_id, backups)| {
        let mut part = CopyReport {
            from: String::new(),
            to: String::new(),
            backups: Vec::new(),
            chunks_copied: 0,
            chunks_present: 0,
            bytes_copied: 0,
            requests: BTreeMap::new(),
        };
        copy_chain(&source, &target, chain_id, backups, now, &mut part).map(|()| part)
    });
    for part in copied {
        let part = part?;
        report.backups.extend(part.backups);
        report.chunks_copied += part.chunks_copied;
        report.chunks_present += part.chunks_present;
        report.bytes_copied += part.bytes_copied;
    }
    for (side, repo) in [("from", &source), ("to", &target)] {
        let counts = repo.backend().requests();
        if !counts.is_empty() {
            report.requests.insert(
                side.into(),
                counts
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            );
        }
    }
    Ok(report)
}

impl CopyReport {
    /// Records that backup `m` was handled: `copied`, or `present` at the target already.
    fn handled(&mut self, m: &BackupManifest, status: &str) {
        self.backups.push(CopiedBackup {
            id: m.id.clone(),
            chain_id: m.chain_id.clone(),
            status: status.into(),
        });
    }
}

/// Copies one chain's backups, oldest first, under a create lease on the target's chain.
fn copy_chain(
    source: &Repository,
    target: &Repository,
    chain_id: &str,
    backups: &[StoredBackup],
    now: Now,
    report: &mut CopyReport,
) -> Result<()> {
    let newest = backups.last().expect("a chain has a backup");
    let _lease = lease_for_create(
        target.backend(),
        chain_id,
        &newest.manifest.id,
        now.secs,
        PRUNE_WAIT,
    )?;
    let src_store = source.chain_store(chain_id)?;
    let dst_store = target.chain_store(chain_id)?;
    if !dst_store.same_naming(&src_store) {
        return recopy_chain(
            source,
            target,
            chain_id,
            backups,
            (&src_store, &dst_store),
            report,
        );
    }
    let mut done: BTreeSet<ContentHash> = BTreeSet::new();
    for b in backups {
        let m = &b.manifest;
        if target.has_manifest(chain_id, &m.id)? {
            let there = target.load_manifest(&Repository::manifest_key(chain_id, &m.id))?;
            if there.checksum != b.checksum {
                return Err(Error::Damaged(format!(
                    "{}: backup {} differs from the source's (checksum {} against {})",
                    target.manifest_path(chain_id, &m.id).display(),
                    m.id,
                    there.checksum,
                    b.checksum
                )));
            }
            report.handled(m, "present");
            continue;
        }
        let refs: Vec<ChunkRef> = m
            .chunk_refs()
            .into_iter()
            .filter(|r| done.insert(r.hash))
            .collect();
        let results = parallel(&refs, 8, |r| dst_store.copy_from(&src_store, r));
        for r in results {
            // A chunk missing at the source because a prune deleted this backup meanwhile is
            // not damage: say so (nothing of it was committed at the target).
            let r = r.map_err(|e| vanished(source, std::slice::from_ref(b), e.into()));
            match r? {
                0 => report.chunks_present += 1,
                n => {
                    report.chunks_copied += 1;
                    report.bytes_copied += n;
                }
            }
        }
        dst_store.sync()?;
        let stored = target.commit_manifest(m)?;
        if stored.checksum != b.checksum {
            return Err(Error::Damaged(format!(
                "backup {}: the copied manifest's checksum {} is not the source's {}",
                m.id, stored.checksum, b.checksum
            )));
        }
        report.bytes_copied += stored.manifest_bytes;
        report.handled(m, "copied");
    }
    Ok(())
}

/// Copies one chain between repositories that name and cut chunks differently (plain and
/// encrypted, or encrypted under different keys): every file is read from the source (each
/// chunk and the whole file checked) and stored again through the target's chunker, so the
/// target's chunks carry its own names and boundaries; the manifest is the source's with the
/// new chunk lists, written last. A file whose chunks an earlier backup of the chain already
/// had is stored once.
fn recopy_chain(
    source: &Repository,
    target: &Repository,
    chain_id: &str,
    backups: &[StoredBackup],
    (src, dst): (&ChainStore, &ChainStore),
    report: &mut CopyReport,
) -> Result<()> {
    type FileKey = (ContentHash, u64, Vec<(ContentHash, u32)>);
    let mut done: BTreeMap<FileKey, Vec<ChunkRef>> = BTreeMap::new();
    for b in backups {
        let m = &b.manifest;
        if target.has_manifest(chain_id, &m.id)? {
            let there = target.load_manifest(&Repository::manifest_key(chain_id, &m.id))?;
            let same = |x: &BackupManifest| {
                (
                    x.files
                        .iter()
                        .map(|f| (f.name.clone(), f.size, f.hash))
                        .collect::<Vec<_>>(),
                    x.snapshot_ids.as_ref().map(|i| (i.count, i.size, i.hash)),
                    x.golden.as_ref().map(|g| (g.size, g.hash)),
                    x.timestamp,
                    x.subsec_nanos,
                )
            };
            if same(&there.manifest) != same(m) {
                return Err(Error::Damaged(format!(
                    "{}: backup {} differs from the source's (other files or contents)",
                    target.manifest_path(chain_id, &m.id).display(),
                    m.id
                )));
            }
            report.handled(m, "present");
            continue;
        }
        let mut stats = kyrodb_backup_storage::StoreStats::default();
        let mut rechunk = |entry: &FileEntry, stats: &mut kyrodb_backup_storage::StoreStats| {
            let key = (
                entry.hash,
                entry.size,
                entry.chunks.iter().map(|c| (c.hash, c.size)).collect(),
            );
            if let Some(chunks) = done.get(&key) {
                if dst.all_intact(chunks) {
                    return Ok(chunks.clone());
                }
            }
            let stored = dst
                .store_file(
                    src.reader(entry),
                    &entry.name,
                    entry.kind,
                    stats,
                    &NoProgress,
                )
                .map_err(|e| match e {
                    kyrodb_backup_storage::Error::Capture(msg) if src.store_failure().is_some() => {
                        Error::Unavailable(msg)
                    }
                    kyrodb_backup_storage::Error::Capture(msg) => Error::Damaged(msg),
                    other => other.into(),
                })
                .map_err(|e| vanished(source, std::slice::from_ref(b), e))?;
            if stored.hash != entry.hash || stored.size != entry.size {
                return Err(Error::Damaged(format!(
                    "backup {}: {} read back as other bytes than its manifest says",
                    m.id, entry.name
                )));
            }
            done.insert(key, stored.chunks.clone());
            Ok(stored.chunks)
        };
        let mut copied = m.clone();
        for f in &mut copied.files {
            f.chunks = rechunk(f, &mut stats)?;
        }
        if let Some(ids) = &mut copied.snapshot_ids {
            let as_file = FileEntry {
                name: format!("{} (document ids)", ids.snapshot),
                kind: FileKind::Snapshot,
                size: ids.size,
                hash: ids.hash,
                chunks: ids.chunks.clone(),
                wal_index: None,
                source: None,
            };
            ids.chunks = rechunk(&as_file, &mut stats)?;
        }
        if let Some(golden) = &mut copied.golden {
            golden.chunks = rechunk(&golden.entry(), &mut stats)?;
        }
        dst.sync()?;
        let stored = target.commit_manifest(&copied)?;
        report.chunks_copied += stats.new_chunks;
        report.chunks_present += stats.reused_chunks;
        report.bytes_copied += stats.stored_bytes + stored.manifest_bytes;
        report.handled(m, "copied");
    }
    Ok(())
}

/// The backups to copy, per chain, oldest first: those asked for, the backups they were made
/// against that still exist, and their chains' fulls.
fn selection(
    listing: &kyrodb_backup_storage::Listing,
    opts: &CopyOptions,
) -> Result<BTreeMap<String, Vec<StoredBackup>>> {
    let by_id: BTreeMap<&str, &StoredBackup> = listing
        .backups
        .iter()
        .map(|b| (b.manifest.id.as_str(), b))
        .collect();
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let roots: Vec<StoredBackup> = if opts.all {
        listing.backups.clone()
    } else {
        opts.ids
            .iter()
            .map(|id| listing.find(id))
            .collect::<std::result::Result<_, _>>()?
    };
    for b in roots {
        // The backup, the backups it was made against that still exist (a prune may have
        // taken some: an incremental holds every file it restores, so it does not need them),
        // and its chain's full, without which a chain is damaged.
        let chain = b.manifest.chain_id.clone();
        if !by_id.contains_key(chain.as_str()) {
            return Err(Error::Damaged(format!(
                "the full backup {chain} of backup {} is missing; its chain cannot be copied",
                b.manifest.id
            )));
        }
        chosen.insert(chain);
        let mut walked = BTreeSet::new();
        let mut cur = Some(b.manifest.id.clone());
        while let Some(id) = cur.take() {
            let Some(b) = by_id.get(id.as_str()) else {
                break;
            };
            if !walked.insert(id.clone()) {
                break;
            }
            chosen.insert(id);
            if b.manifest.backup_type == BackupType::Incremental {
                cur.clone_from(&b.manifest.parent_id);
            }
        }
    }
    let mut out: BTreeMap<String, Vec<StoredBackup>> = BTreeMap::new();
    for b in listing.backups.iter().rev() {
        if chosen.contains(&b.manifest.id) {
            out.entry(b.manifest.chain_id.clone())
                .or_default()
                .push(b.clone());
        }
    }
    for chain in out.values_mut() {
        // Parents before children: by time, the full first.
        chain.sort_by_key(|b| {
            (
                b.manifest.backup_type != BackupType::Full,
                b.manifest.timestamp,
                b.manifest.subsec_nanos,
            )
        });
    }
    Ok(out)
}
