//! The continuous WAL archive inside a repository: timelines, their pieces of WAL frames, their
//! bases (snapshots), and the archiver's last word.
//!
//! Layout, beside `chains/` (the same keys on a disk and in a bucket):
//!
//! | key | what |
//! | --- | --- |
//! | `archive/<timeline>/wal/<piece name>` | a piece: consecutive WAL frames, named by seq range, timestamps, when it was observed, merge level |
//! | `archive/<timeline>/bases/<base name>` | a base: a manifest holding a snapshot (and a MANIFEST naming it), named by its last WAL seq and timestamp |
//! | `archive/<timeline>/chunks/<hh>/<hash>` | the chunks of the bases, shared between the bases of the timeline |
//! | `archive/<timeline>/observed.json` | the archiver's last word: up to which frame, as of which second, it had seen everything |
//!
//! Everything but `observed.json` is written create-only and never changed; the names carry
//! what point-in-time resolution needs, so resolving reads listings, not objects.

use std::sync::Arc;

use kyrodb_backup_backend::Written;
use kyrodb_backup_format::repo::{
    decode_manifest, decode_piece, encode_manifest, encode_piece, BackupManifest, BaseName, Piece,
    PieceName, TimelineId, MAX_PIECE_SIZE,
};
use serde::{Deserialize, Serialize};

use crate::chunkstore::ChainStore;
use crate::error::{Error, Result};
use crate::repository::Repository;

/// The folder of the archive.
pub const ARCHIVE_DIR: &str = "archive";
const OBSERVED: &str = "observed.json";
const MAX_OBSERVED: u64 = 64 * 1024;

/// A stored piece of WAL frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedPiece {
    /// Its key.
    pub key: String,
    /// What its name says.
    pub name: PieceName,
    /// Its size in bytes.
    pub size: u64,
}

/// A stored base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedBase {
    /// Its key.
    pub key: String,
    /// What its name says.
    pub name: BaseName,
}

/// Up to which frame, as of which second, the archiver of a timeline had seen everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedRecord {
    /// The timeline.
    pub timeline: String,
    /// Sequence number of the last frame archived.
    pub last_seq: u64,
    /// CRC-32 stored in that frame (tells a continued history from another one).
    pub last_crc: u32,
    /// Every frame after `last_seq` has a timestamp at or after this second.
    pub observed_at: u64,
    /// When this record was written (Unix second): the archiver's heartbeat.
    pub written_at: u64,
    /// How far behind the data dir the archiver was, in seconds (the oldest frame not yet
    /// stored).
    pub lag_seconds: u64,
    /// Bytes of WAL in the data dir not yet stored.
    pub pending_bytes: u64,
    /// The archiver's host.
    pub host: String,
    /// The archiver's process id.
    pub pid: u32,
}

/// One timeline as stored.
#[derive(Debug, Clone)]
pub struct ArchivedTimeline {
    /// Its id.
    pub id: TimelineId,
    /// Its pieces, ordered by name (first seq).
    pub pieces: Vec<ArchivedPiece>,
    /// Its bases, ordered by name (last WAL seq).
    pub bases: Vec<ArchivedBase>,
    /// The archiver's last word, if any was written (or readable).
    pub observed: Option<ObservedRecord>,
    /// Keys under the timeline that are none of these (chunks excluded): left alone.
    pub unknown: Vec<String>,
}

impl ArchivedTimeline {
    /// The last frame stored and the newest second it is known complete at: the greatest
    /// `last_seq` of the pieces and the record, with the CRC where the record says it.
    pub fn newest_seq(&self) -> u64 {
        let pieces = self
            .pieces
            .iter()
            .map(|p| p.name.last_seq)
            .max()
            .unwrap_or(0);
        let bases = self
            .bases
            .iter()
            .map(|b| b.name.last_wal_seq)
            .max()
            .unwrap_or(0);
        pieces
            .max(bases)
            .max(self.observed.as_ref().map_or(0, |o| o.last_seq))
    }

    /// The newest second the archived history is known complete at (every later frame is at
    /// or after it), 0 when nothing says.
    pub fn observed_at(&self) -> u64 {
        let pieces = self
            .pieces
            .iter()
            .map(|p| p.name.observed_at)
            .max()
            .unwrap_or(0);
        pieces.max(self.observed.as_ref().map_or(0, |o| o.observed_at))
    }
}

impl Repository {
    fn timeline_prefix(tl: TimelineId) -> String {
        format!("{ARCHIVE_DIR}/{tl}/")
    }

    /// Key of a piece.
    pub fn piece_key(tl: TimelineId, name: &PieceName) -> String {
        format!("{}wal/{}", Self::timeline_prefix(tl), name.file_name())
    }

    /// Key of a base.
    pub fn base_key(tl: TimelineId, name: &BaseName) -> String {
        format!("{}bases/{}", Self::timeline_prefix(tl), name.file_name())
    }

    /// The chunk store of a timeline's bases.
    pub fn archive_store(&self, tl: TimelineId) -> ChainStore {
        ChainStore::new(
            Arc::clone(self.backend()),
            format!("{}chunks/", Self::timeline_prefix(tl)),
            self.keys().cloned(),
        )
    }

    /// Whether the repository holds a continuous archive (one listing).
    ///
    /// # Errors
    ///
    /// When the store cannot be listed.
    pub fn has_archive(&self) -> Result<bool> {
        Ok(!self
            .backend()
            .list_folders(&format!("{ARCHIVE_DIR}/"))?
            .is_empty())
    }

    /// Every timeline of the archive, oldest first, from listings (and one read of each
    /// timeline's `observed.json`).
    ///
    /// # Errors
    ///
    /// When the store cannot be listed.
    pub fn archive_timelines(&self) -> Result<Vec<ArchivedTimeline>> {
        let mut ids: Vec<TimelineId> = self
            .backend()
            .list_folders(&format!("{ARCHIVE_DIR}/"))?
            .iter()
            .filter_map(|f| TimelineId::parse(f))
            .collect();
        ids.sort();
        let listed = crate::parallel_map(&ids, 8, |tl| self.archive_timeline(*tl));
        listed.into_iter().collect()
    }

    /// One timeline, from its listing (and one read of its `observed.json`).
    ///
    /// # Errors
    ///
    /// When the store cannot be listed.
    pub fn archive_timeline(&self, tl: TimelineId) -> Result<ArchivedTimeline> {
        let prefix = Self::timeline_prefix(tl);
        let mut out = ArchivedTimeline {
            id: tl,
            pieces: Vec::new(),
            bases: Vec::new(),
            observed: None,
            unknown: Vec::new(),
        };
        for e in self.backend().list(&prefix)? {
            let rest = &e.key[prefix.len()..];
            if let Some(n) = rest.strip_prefix("wal/") {
                if let Some(name) = PieceName::parse(n) {
                    out.pieces.push(ArchivedPiece {
                        key: e.key.clone(),
                        name,
                        size: e.size,
                    });
                    continue;
                }
            } else if let Some(n) = rest.strip_prefix("bases/") {
                if let Some(name) = BaseName::parse(n) {
                    out.bases.push(ArchivedBase {
                        key: e.key.clone(),
                        name,
                    });
                    continue;
                }
            } else if rest == OBSERVED || rest.starts_with("chunks/") {
                continue;
            }
            out.unknown.push(e.key);
        }
        out.pieces.sort_by_key(|p| p.name);
        out.bases.sort_by_key(|b| b.name.last_wal_seq);
        out.observed = self.read_observed(tl)?;
        Ok(out)
    }

    /// The archiver's last word on a timeline (`None` when absent or unreadable: it is only
    /// ever a hint next to the pieces).
    ///
    /// # Errors
    ///
    /// When the store fails (not when the record is missing or damaged).
    pub fn read_observed(&self, tl: TimelineId) -> Result<Option<ObservedRecord>> {
        let key = format!("{}{OBSERVED}", Self::timeline_prefix(tl));
        match self.backend().read(&key, MAX_OBSERVED) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the archiver's last word on a timeline.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub fn write_observed(&self, tl: TimelineId, rec: &ObservedRecord) -> Result<()> {
        let key = format!("{}{OBSERVED}", Self::timeline_prefix(tl));
        let bytes = serde_json::to_vec(rec).expect("record serializes");
        self.backend().write(&key, &bytes)?;
        self.backend().sync()?;
        Ok(())
    }

    /// Stores a piece of raw WAL frames, create-only, durably. A piece already stored under
    /// the same name (a retry) is read back and must hold the same frames.
    ///
    /// # Errors
    ///
    /// When the frames do not match the name, a different piece holds the name, or the store
    /// fails.
    pub fn write_piece(&self, tl: TimelineId, name: &PieceName, frames: &[u8]) -> Result<String> {
        let bytes = encode_piece(name, frames)?;
        let key = Self::piece_key(tl, name);
        if self.backend().write_new(&key, &bytes)? == Written::Existed {
            let there = self.read_piece(&key, name)?;
            if there.body() != frames {
                return Err(Error::Damaged(format!(
                    "{}: holds other frames than this archiver read",
                    self.object_name(&key)
                )));
            }
        }
        self.backend().sync()?;
        Ok(key)
    }

    /// Reads and checks a piece.
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] when it is missing or does not decode as its name says.
    pub fn read_piece(&self, key: &str, name: &PieceName) -> Result<Piece> {
        let bytes = self
            .backend()
            .read(key, MAX_PIECE_SIZE as u64)
            .map_err(|e| {
                if e.is_not_found() {
                    Error::Damaged(format!("{} is missing", self.object_name(key)))
                } else {
                    e.into()
                }
            })?;
        decode_piece(&bytes, name).map_err(|e| e.in_file(self.object_name(key)).into())
    }

    /// Commits a base's manifest, create-only: everything it names must be durable in the
    /// timeline's chunk store.
    ///
    /// # Errors
    ///
    /// When the manifest does not validate, the base exists, or the store fails.
    pub fn commit_base(
        &self,
        tl: TimelineId,
        name: &BaseName,
        manifest: &BackupManifest,
    ) -> Result<String> {
        manifest.validate()?;
        let bytes = encode_manifest(manifest)?;
        let key = Self::base_key(tl, name);
        if self.backend().write_new(&key, &bytes)? == Written::Existed {
            return Err(Error::Damaged(format!(
                "{}: base already exists",
                self.object_name(&key)
            )));
        }
        self.backend().sync()?;
        Ok(key)
    }

    /// Loads and checks a base's manifest.
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] or [`Error::Format`] when it is not the base its name says.
    pub fn load_base(&self, base: &ArchivedBase) -> Result<BackupManifest> {
        let name = self.object_name(&base.key);
        let bytes = self
            .backend()
            .read(&base.key, kyrodb_backup_format::repo::MAX_MANIFEST_SIZE)
            .map_err(|e| {
                if e.is_not_found() {
                    Error::Damaged(format!("{name} is missing"))
                } else {
                    e.into()
                }
            })?;
        let m = decode_manifest(&bytes).map_err(|e| e.in_file(&name))?;
        let agrees = m.id == base.name.id
            && m.snapshot.as_ref().is_some_and(|s| {
                s.last_wal_seq == base.name.last_wal_seq && s.timestamp == base.name.snapshot_ts
            });
        if !agrees {
            return Err(Error::Damaged(format!(
                "{name}: the base inside is not the one its name says"
            )));
        }
        Ok(m)
    }

    /// Deletes objects of the archive (missing ones count as deleted), then syncs.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub fn delete_archived(&self, keys: &[String]) -> Result<u64> {
        let results = crate::parallel_map(keys, 16, |k| match self.backend().delete(k) {
            Ok(()) => Ok(1u64),
            Err(e) if e.is_not_found() => Ok(0),
            Err(e) => Err(e),
        });
        let mut n = 0;
        for r in results {
            n += r?;
        }
        self.backend().sync()?;
        Ok(n)
    }

    /// Every chunk key of a timeline's store.
    ///
    /// # Errors
    ///
    /// When the store cannot be listed.
    pub fn archive_chunk_keys(&self, tl: TimelineId) -> Result<Vec<String>> {
        let prefix = format!("{}chunks/", Self::timeline_prefix(tl));
        Ok(self
            .backend()
            .list(&prefix)?
            .into_iter()
            .map(|e| e.key)
            .collect())
    }
}

/// What a prune removes from the archive, decided from listings alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchivePrunePlan {
    /// The first second every kept timeline must still restore.
    pub window_from: u64,
    /// Timelines removed whole (nothing of them reaches the window).
    pub timelines_removed: Vec<String>,
    /// Bases removed (older than the base the window starts from).
    pub bases_removed: Vec<String>,
    /// Pieces removed (every frame in them is older than that base).
    pub pieces_removed: Vec<String>,
    /// Timelines whose unreferenced chunks are collected after the bases go.
    #[serde(skip)]
    pub collect_chunks: Vec<TimelineId>,
}

/// Decides what of the archive a prune removes so that every second from `window_from` on
/// that the archive restores today, it still restores; nothing else is kept.
///
/// Per timeline: one whose history ends before the window (its newest proof of completeness
/// is at or before `window_from`) goes whole, unless an archiver may still write to it (the
/// newest timeline while `archiver_live`). Otherwise the window starts from the newest base
/// taken at or before `window_from`: older bases go, and so do pieces whose every frame that
/// base holds. A timeline without such a base is kept whole.
pub fn plan_archive_prune(
    timelines: &[ArchivedTimeline],
    window_from: u64,
    archiver_live: bool,
) -> ArchivePrunePlan {
    let mut plan = ArchivePrunePlan {
        window_from,
        ..ArchivePrunePlan::default()
    };
    let newest = timelines.iter().map(|t| t.id).max();
    for tl in timelines {
        let writable = archiver_live && Some(tl.id) == newest;
        if !writable && tl.observed_at() <= window_from {
            plan.timelines_removed.push(tl.id.to_string());
            continue;
        }
        let Some(start) = tl
            .bases
            .iter()
            .filter(|b| b.name.snapshot_ts <= window_from)
            .max_by_key(|b| (b.name.snapshot_ts, b.name.last_wal_seq))
        else {
            continue;
        };
        let before = |b: &ArchivedBase| {
            (b.name.snapshot_ts, b.name.last_wal_seq)
                < (start.name.snapshot_ts, start.name.last_wal_seq)
                && b.name.last_wal_seq <= start.name.last_wal_seq
        };
        let gone: Vec<String> = tl
            .bases
            .iter()
            .filter(|b| before(b))
            .map(|b| b.key.clone())
            .collect();
        if !gone.is_empty() {
            plan.collect_chunks.push(tl.id);
        }
        plan.bases_removed.extend(gone);
        plan.pieces_removed.extend(
            tl.pieces
                .iter()
                .filter(|p| p.name.last_seq <= start.name.last_wal_seq)
                .map(|p| p.key.clone()),
        );
    }
    plan
}

/// What a prune of the archive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchivePruneReport {
    /// What was decided.
    #[serde(flatten)]
    pub plan: ArchivePrunePlan,
    /// Chunks of removed bases no kept base needs, deleted.
    pub chunks_removed: u64,
    /// Timelines whose chunks were left because an archiver was writing a base to them.
    pub chunks_deferred: Vec<String>,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
}

/// Carries out [`plan_archive_prune`] for the repository, holding the prune lease the caller
/// took: bases and pieces first, then chunks no kept base of the timeline names (skipped for a
/// timeline an archiver is writing a base to), then whole timelines.
///
/// # Errors
///
/// When the store fails; a kept base that does not load stops chunk collection of its
/// timeline (reported as an error: deleting chunks it may need would be worse).
pub fn prune_archive(
    repo: &Repository,
    window_from: u64,
    now: u64,
    dry_run: bool,
) -> Result<ArchivePruneReport> {
    let backend = repo.backend();
    let live = crate::lease::archive_holder(backend.as_ref(), now)?.is_some();
    let leases = crate::lease::create_leases(backend.as_ref(), now, &|_, _| false)?;
    let timelines = repo.archive_timelines()?;
    let plan = plan_archive_prune(&timelines, window_from, live);
    let mut report = ArchivePruneReport {
        plan,
        dry_run,
        ..ArchivePruneReport::default()
    };
    if dry_run {
        return Ok(report);
    }
    let mut keys = report.plan.bases_removed.clone();
    keys.extend(report.plan.pieces_removed.iter().cloned());
    repo.delete_archived(&keys)?;
    for tl_id in report.plan.collect_chunks.clone() {
        if leases.is_busy(&format!("{ARCHIVE_DIR}/{tl_id}")) {
            report.chunks_deferred.push(tl_id.to_string());
            continue;
        }
        let Some(tl) = timelines.iter().find(|t| t.id == tl_id) else {
            continue;
        };
        let store = repo.archive_store(tl_id);
        let mut needed = std::collections::HashSet::new();
        for b in tl
            .bases
            .iter()
            .filter(|b| !report.plan.bases_removed.contains(&b.key))
        {
            for c in repo.load_base(b)?.chunk_refs() {
                needed.insert(store.chunk_key(c.hash));
            }
        }
        let unneeded: Vec<String> = repo
            .archive_chunk_keys(tl_id)?
            .into_iter()
            .filter(|k| !needed.contains(k))
            .collect();
        report.chunks_removed += repo.delete_archived(&unneeded)?;
    }
    for id in &report.plan.timelines_removed {
        let all: Vec<String> = backend
            .list(&format!("{ARCHIVE_DIR}/{id}/"))?
            .into_iter()
            .map(|e| e.key)
            .collect();
        repo.delete_archived(&all)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tl(id: u64, bases: &[(u64, u64)], pieces: &[(u64, u64, u64)]) -> ArchivedTimeline {
        let id = TimelineId {
            started_at: id,
            tag: 1,
        };
        ArchivedTimeline {
            id,
            bases: bases
                .iter()
                .map(|&(seq, ts)| {
                    let name = BaseName {
                        last_wal_seq: seq,
                        snapshot_ts: ts,
                        id: format!("00000000-0000-4000-8000-{seq:012}"),
                    };
                    ArchivedBase {
                        key: Repository::base_key(id, &name),
                        name,
                    }
                })
                .collect(),
            pieces: pieces
                .iter()
                .map(|&(first, last, observed)| {
                    let name = PieceName {
                        first_seq: first,
                        last_seq: last,
                        first_ts: observed - 1,
                        last_ts: observed - 1,
                        observed_at: observed,
                        level: 0,
                    };
                    ArchivedPiece {
                        key: Repository::piece_key(id, &name),
                        name,
                        size: 100,
                    }
                })
                .collect(),
            observed: None,
            unknown: Vec::new(),
        }
    }

    #[test]
    fn the_window_starts_from_the_newest_base_before_it() {
        // Bases at seq 10 (t=100), 20 (t=200), 30 (t=300); pieces of 5 frames each.
        let t = tl(
            50,
            &[(10, 100), (20, 200), (30, 300)],
            &[(11, 15, 150), (16, 20, 199), (21, 25, 250), (26, 35, 320)],
        );
        let plan = plan_archive_prune(std::slice::from_ref(&t), 250, false);
        assert_eq!(plan.bases_removed, vec![t.bases[0].key.clone()]);
        assert_eq!(
            plan.pieces_removed,
            vec![t.pieces[0].key.clone(), t.pieces[1].key.clone()]
        );
        assert!(plan.timelines_removed.is_empty());
        // A window before every base keeps everything.
        let plan = plan_archive_prune(std::slice::from_ref(&t), 50, false);
        assert!(plan.bases_removed.is_empty() && plan.pieces_removed.is_empty());
    }

    #[test]
    fn timelines_that_end_before_the_window_go_whole_unless_an_archiver_may_write() {
        let old = tl(10, &[(10, 100)], &[(11, 15, 150)]);
        let new = tl(20, &[(10, 100)], &[(11, 15, 160)]);
        let both = [old.clone(), new.clone()];
        let plan = plan_archive_prune(&both, 200, false);
        assert_eq!(
            plan.timelines_removed,
            vec![old.id.to_string(), new.id.to_string()]
        );
        // A live archiver may resume the newest one: it stays.
        let plan = plan_archive_prune(&both, 200, true);
        assert_eq!(plan.timelines_removed, vec![old.id.to_string()]);
        // A piece observed after the window start keeps its timeline.
        let plan = plan_archive_prune(&both, 155, false);
        assert_eq!(plan.timelines_removed, vec![old.id.to_string()]);
    }
}
