//! One catalog of the backups in a backup directory: this tool's repository, and the engine's
//! built-in tool's `backup_<uuid>.json` + `backup_<uuid>.tar` pairs beside it.

use crate::access::RepoRef;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use kyrodb_backup_chain::{
    BackupView, BaseView, PieceView, SegmentView, SnapshotView, TimelineView,
};
use kyrodb_backup_durable::open_no_follow;
use kyrodb_backup_format::engine::{
    builtin_meta_id, is_wal_file_name, read_members, recover, BuiltinMeta, DataDirManifest,
    DistanceMetric, FileSource, LiveIds, Member, RecoveryOptions, SnapshotReader, WalReader,
};
use kyrodb_backup_format::repo::{BackupManifest, FileKind};
use kyrodb_backup_storage::{Listing, Repository};

use crate::error::{Error, Result};
use crate::model::{BackupSummary, SnapshotRef};

/// A backup of the engine's built-in tool found in the backup directory.
#[derive(Debug, Clone)]
pub struct BuiltinBackup {
    /// Its metadata.
    pub meta: BuiltinMeta,
    /// Its archive.
    pub archive: PathBuf,
}

/// Every backup in a backup directory, of both kinds.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    /// This tool's backups, newest first, and manifests that cannot be read.
    pub listing: Listing,
    /// The built-in tool's backups, oldest first.
    pub builtin: Vec<BuiltinBackup>,
    /// What could not be read, one line each.
    pub warnings: Vec<String>,
}

impl Catalog {
    /// Reads both kinds. A directory without a repository has none of this tool's backups;
    /// a missing directory is [`Error::NotARepository`].
    pub fn read(location: &RepoRef) -> Result<Self> {
        let listing = listing_of(location)?;
        let mut catalog = Self::builtin_only(location);
        catalog.warnings.splice(
            0..0,
            listing
                .problems
                .iter()
                .map(|(p, e)| format!("{}: {e}", p.display())),
        );
        catalog.listing = listing;
        Ok(catalog)
    }

    /// The built-in tool's backups only (no repository is opened).
    pub fn builtin_only(location: &RepoRef) -> Self {
        let Some(dir) = location.as_local() else {
            return Self::default();
        };
        let (builtin, problems) = list_builtin(dir);
        Self {
            listing: Listing::default(),
            builtin,
            warnings: problems
                .into_iter()
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect(),
        }
    }

    /// Every backup's summary, newest first, and a line for each built-in backup whose state
    /// could not be read (it is listed with its metadata's figures).
    pub fn summaries(&self) -> (Vec<BackupSummary>, Vec<String>) {
        let mut warnings = Vec::new();
        let mut all: Vec<BackupSummary> =
            self.listing.backups.iter().map(BackupSummary::of).collect();
        for b in &self.builtin {
            let state = builtin_state(b, &self.builtin)
                .map_err(|e| {
                    warnings.push(format!(
                        "{}: {e} (listed with the figures of its metadata)",
                        b.archive.display()
                    ));
                })
                .ok();
            all.push(BackupSummary::of_builtin(b, state));
        }
        all.sort_by_key(|b| std::cmp::Reverse((b.timestamp, b.subsec_nanos)));
        (all, warnings)
    }

    /// A built-in backup by full id or unique prefix of 8 or more characters.
    pub fn find_builtin(&self, prefix: &str) -> Option<&BuiltinBackup> {
        if prefix.len() < 8 {
            return self.builtin.iter().find(|b| b.meta.id == prefix);
        }
        let mut m = self
            .builtin
            .iter()
            .filter(|b| b.meta.id.starts_with(prefix));
        match (m.next(), m.next()) {
            (Some(b), None) => Some(b),
            _ => None,
        }
    }
}

/// What the point-in-time rule sees of a backup.
pub(crate) fn chain_view(m: &BackupManifest) -> BackupView {
    BackupView {
        id: m.id.clone(),
        chain_id: m.chain_id.clone(),
        timestamp: m.timestamp,
        snapshot: m.snapshot.as_ref().map(|s| SnapshotView {
            file: s.file.clone(),
            timestamp: s.timestamp,
            last_wal_seq: s.last_wal_seq,
        }),
        segments: m
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Wal)
            .filter_map(|f| {
                Some(SegmentView {
                    name: f.name.clone(),
                    entries: f.wal_index.as_ref()?.iter().collect(),
                })
            })
            .collect(),
    }
}

/// What the point-in-time rule sees of an archived timeline.
pub(crate) fn timeline_view(t: &kyrodb_backup_storage::ArchivedTimeline) -> TimelineView {
    TimelineView {
        id: t.id.to_string(),
        not_before: t.id.started_at,
        bases: t
            .bases
            .iter()
            .map(|b| BaseView {
                key: b.key.clone(),
                timestamp: b.name.snapshot_ts,
                last_wal_seq: b.name.last_wal_seq,
            })
            .collect(),
        pieces: t
            .pieces
            .iter()
            .map(|p| PieceView {
                key: p.key.clone(),
                first_seq: p.name.first_seq,
                last_seq: p.name.last_seq,
                first_ts: p.name.first_ts,
                last_ts: p.name.last_ts,
                observed_at: p.name.observed_at,
            })
            .collect(),
        observed: t
            .observed
            .iter()
            .filter(|o| o.timeline == t.id.to_string())
            .map(|o| (o.observed_at, o.last_seq))
            .collect(),
    }
}

/// Opens the repository at `location`, which must exist.
pub(crate) fn open_repo(location: &RepoRef) -> Result<Repository> {
    if let Some(dir) = location.as_local() {
        if !dir.exists() {
            return Err(Error::NotARepository(location.display()));
        }
    }
    location.open()
}

/// This tool's backups at `location`; an existing directory (or bucket prefix) without a
/// repository has none yet.
pub(crate) fn listing_of(location: &RepoRef) -> Result<Listing> {
    if let Some(dir) = location.as_local() {
        if !dir.is_dir() {
            return Err(Error::NotARepository(location.display()));
        }
        if !Repository::exists(dir) && !dir.join("chains").exists() {
            return Ok(Listing::default());
        }
    }
    match location.open() {
        Ok(repo) => Ok(repo.list()?),
        Err(Error::NotARepository(_)) => Ok(Listing::default()),
        Err(e) => Err(e),
    }
}

fn damaged(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Damaged(format!("{}: {e}", path.display()))
}

/// Every built-in backup of `dir`, oldest first, and the metadata files that cannot be read.
fn list_builtin(dir: &Path) -> (Vec<BuiltinBackup>, Vec<(PathBuf, Error)>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return (found, problems);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = builtin_meta_id(&name) else {
            continue;
        };
        let path = e.path();
        let meta = fs::read(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })
            .and_then(|b| BuiltinMeta::decode(&b, id).map_err(|err| damaged(&path, err)));
        match meta {
            Ok(meta) => found.push(BuiltinBackup {
                archive: dir.join(format!("backup_{id}.tar")),
                meta,
            }),
            Err(err) => problems.push((path, err)),
        }
    }
    found.sort_by(|a, b| (a.meta.timestamp, &a.meta.id).cmp(&(b.meta.timestamp, &b.meta.id)));
    (found, problems)
}

/// An archive's member table.
pub(crate) fn members(archive: &Path) -> Result<Vec<Member>> {
    let file = open_no_follow(archive).map_err(|source| Error::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| Error::Io {
            path: archive.to_path_buf(),
            source,
        })?
        .len();
    read_members(BufReader::new(file), size).map_err(|e| damaged(archive, e))
}

/// A reader of one member's data.
fn member_reader(archive: &Path, m: &Member) -> io::Result<impl Read> {
    let mut f = open_no_follow(archive)?;
    f.seek(SeekFrom::Start(m.offset))?;
    Ok(BufReader::new(f.take(m.len)))
}

/// The backups whose archives rebuild `b`, oldest (the full) first.
pub(crate) fn builtin_chain<'a>(
    b: &'a BuiltinBackup,
    all: &'a [BuiltinBackup],
) -> Result<Vec<&'a BuiltinBackup>> {
    let mut chain = vec![b];
    let mut cur = b;
    while let Some(parent) = &cur.meta.parent_id {
        let p = all.iter().find(|x| &x.meta.id == parent).ok_or_else(|| {
            Error::Damaged(format!(
                "built-in backup {}: its parent {parent} is missing, so its chain cannot be rebuilt",
                cur.meta.id
            ))
        })?;
        if chain.len() > all.len() {
            return Err(Error::Damaged(format!(
                "built-in backup {}: its parents form a loop",
                b.meta.id
            )));
        }
        chain.push(p);
        cur = p;
    }
    if cur.meta.backup_type != "Full" {
        return Err(Error::Damaged(format!(
            "built-in backup {}: its chain starts with {}, which is not a full backup",
            b.meta.id, cur.meta.id
        )));
    }
    chain.reverse();
    Ok(chain)
}

/// The files extracting a chain's archives in order yields: name → (archive, member).
pub(crate) fn extracted(chain: &[&BuiltinBackup]) -> Result<BTreeMap<String, (PathBuf, Member)>> {
    let mut files = BTreeMap::new();
    for b in chain {
        for m in members(&b.archive)? {
            files.insert(m.name.clone(), (b.archive.clone(), m));
        }
    }
    Ok(files)
}

struct ExtractedSource<'a>(&'a BTreeMap<String, (PathBuf, Member)>);

impl FileSource for ExtractedSource<'_> {
    fn open(&mut self, name: &str) -> io::Result<Box<dyn Read + '_>> {
        let (path, m) = self.0.get(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name} is in no archive of the chain"),
            )
        })?;
        member_reader(path, m).map(|r| Box::new(r) as Box<dyn Read>)
    }
    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.0.keys().cloned().collect())
    }
}

/// Checks one built-in backup and its chain: archives present and well formed, checksums as
/// recorded, every member decodes, and the extracted chain recovers. The tool's incrementals
/// hold only WAL segments, so when the engine took a snapshot between two of its backups the
/// chain's MANIFEST names a snapshot no archive holds: the engine would then silently load an
/// older one and lose documents. That is reported as damage, not reproduced.
/// Returns the live document count of the rebuilt state.
pub(crate) fn check_builtin(b: &BuiltinBackup, all: &[BuiltinBackup]) -> Result<u64> {
    let chain = builtin_chain(b, all)?;
    for link in &chain {
        let mut sum = 0u32;
        for m in &members(&link.archive)? {
            let mut hasher = crc32fast::Hasher::new();
            let mut r = member_reader(&link.archive, m).map_err(|e| damaged(&link.archive, e))?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = r.read(&mut buf).map_err(|e| damaged(&link.archive, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            sum = sum.wrapping_add(hasher.finalize());
            decode_member(&link.archive, m)?;
        }
        if sum != link.meta.checksum {
            return Err(Error::Damaged(format!(
                "built-in backup {}: archive checksum {sum} does not match the recorded {}",
                link.meta.id, link.meta.checksum
            )));
        }
    }
    let files = extracted(&chain)?;
    let (mpath, mm) = files.get("MANIFEST").ok_or_else(|| {
        Error::Damaged(format!(
            "built-in backup {}: no archive of its chain holds a MANIFEST",
            b.meta.id
        ))
    })?;
    let mut mbytes = Vec::new();
    member_reader(mpath, mm)
        .and_then(|mut r| r.read_to_end(&mut mbytes))
        .map_err(|e| damaged(mpath, e))?;
    let manifest = DataDirManifest::parse(&mbytes).map_err(|e| e.in_file("MANIFEST"))?;
    if let Some(snap) = manifest.snapshot_file() {
        if !files.contains_key(&snap) {
            return Err(Error::Damaged(format!(
                "built-in backup {}: its MANIFEST names {snap}, which no archive of its chain holds \
                 (the engine took a snapshot between backups and the built-in tool's incrementals \
                 hold only WAL); restoring it would make the engine fall back to an older snapshot \
                 and lose documents. Restore an earlier backup of the chain, or a newer full backup",
                b.meta.id
            )));
        }
    }
    Ok(recover_extracted(b, &files)?.vector_count)
}

/// What a built-in backup's chain recovers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BuiltinState {
    /// Live documents.
    pub vector_count: u64,
    /// The metric its snapshot stores.
    pub distance: Option<DistanceMetric>,
    /// Vector dimension.
    pub dimension: Option<u64>,
}

fn recover_extracted(
    b: &BuiltinBackup,
    files: &BTreeMap<String, (PathBuf, Member)>,
) -> Result<BuiltinState> {
    let mut ids = LiveIds::default();
    let report = recover(
        &mut ExtractedSource(files),
        &mut ids,
        &RecoveryOptions::default(),
    )
    .map_err(|e| Error::Damaged(format!("built-in backup {}: {e}", b.meta.id)))?;
    Ok(BuiltinState {
        vector_count: ids.len() as u64,
        distance: report.distance,
        dimension: report.dimension,
    })
}

/// What `b`'s chain recovers to, read from its archives (the metadata's `vector_count` is the
/// snapshot header's count, not the live count a restore yields).
pub(crate) fn builtin_state(b: &BuiltinBackup, all: &[BuiltinBackup]) -> Result<BuiltinState> {
    let chain = builtin_chain(b, all)?;
    recover_extracted(b, &extracted(&chain)?)
}

fn decode_member(archive: &Path, m: &Member) -> Result<()> {
    let r = member_reader(archive, m).map_err(|e| damaged(archive, e))?;
    let res = if m.name == "MANIFEST" {
        let mut b = Vec::new();
        r.take(1 << 20)
            .read_to_end(&mut b)
            .map_err(|e| damaged(archive, e))?;
        DataDirManifest::parse(&b).map(|_| ())
    } else if is_wal_file_name(&m.name) {
        WalReader::new(r).and_then(|mut w| {
            while w.next_frame()?.is_some() {}
            Ok(())
        })
    } else {
        SnapshotReader::new(r)
            .and_then(SnapshotReader::finish)
            .map(|_| ())
    };
    res.map_err(|e| Error::Damaged(format!("{}: member {}: {e}", archive.display(), m.name)))
}

impl BackupSummary {
    /// The summary of a built-in tool's backup, with the state its chain recovers to when that
    /// could be read (else the metadata's figures: the snapshot header's count, no metric).
    pub(crate) fn of_builtin(b: &BuiltinBackup, state: Option<BuiltinState>) -> Self {
        let m = &b.meta;
        Self {
            id: m.id.clone(),
            timestamp: m.timestamp,
            backup_type: m.backup_type.clone(),
            parent_id: m.parent_id.clone(),
            chain_id: None,
            description: m.description.clone(),
            size_bytes: m.size_bytes,
            stored_bytes: fs::metadata(&b.archive).map_or(0, |x| x.len()),
            vector_count: state.map_or(m.vector_count, |s| s.vector_count),
            dimension: state.and_then(|s| s.dimension),
            distance: state.and_then(|s| s.distance).map(|d| d.to_string()),
            checksum: m.checksum.to_string(),
            snapshot: m.snapshot_file.as_ref().map(|f| SnapshotRef {
                file: f.clone(),
                version: None,
                timestamp: None,
                last_wal_seq: None,
                layout: None,
                doc_count: None,
            }),
            wal: None,
            format: Some("builtin"),
            golden: None,
            last_drill: None,
            subsec_nanos: 0,
        }
    }
}

/// `e`, or [`Error::Vanished`] when it is damage that a prune deleting one of `backups` while
/// a command read it explains (its manifest is gone now): not damage, and nothing of it was
/// restored or copied.
pub(crate) fn vanished(
    repo: &Repository,
    backups: &[kyrodb_backup_storage::StoredBackup],
    e: Error,
) -> Error {
    if e.kind() != crate::ErrorKind::Integrity {
        return e;
    }
    for b in backups {
        let m = &b.manifest;
        if matches!(repo.has_manifest(&m.chain_id, &m.id), Ok(false)) {
            return Error::Vanished(m.id.clone());
        }
    }
    e
}
