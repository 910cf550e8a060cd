//! Capturing a data directory's consistent state into the repository (`create`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use kyrodb_backup_format::engine::{recover, FileSource, LiveIds, RecoveryOptions, RecoveryReport};
use kyrodb_backup_format::repo::{
    recover_from_snapshot_ids, BackupManifest, BackupType, FileEntry, FileKind, GoldenQueries,
    SkippedFile, SnapshotIdRecorder, SnapshotIds, SnapshotSummary, SourceStamp, WalIndex,
    WalSummary, GOLDEN_MANIFEST_VERSION,
};

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, OnceLock};

use kyrodb_backup_datadir::capture::{open_consistent, scan_wal, OpenedState, PrefixReader};
use kyrodb_backup_datadir::golden::{golden_from_sample, Counting, GoldenOptions, GoldenSampler};

use crate::chunkstore::{ChainStore, SharedChunk, StoreStats};
use crate::error::{Error, Result};
use crate::repository::{Repository, StoredBackup};

/// What `create` is asked to do. The caller supplies the id and the clock.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The KyroDB data directory to capture.
    pub data_dir: PathBuf,
    /// Id of the new backup (a lower-case hyphenated UUID).
    pub id: String,
    /// The Unix second the backup is taken.
    pub now: u64,
    /// Nanoseconds within that second (orders backups of the same second).
    pub now_subsec_nanos: u32,
    /// Operator's description.
    pub description: String,
    /// Version of the tool, recorded in the manifest.
    pub tool_version: String,
    /// For an incremental: the backup it is made against (it joins that backup's chain).
    pub parent: Option<BackupManifest>,
    /// Read and chunk everything, and report what would be stored, but write nothing: no
    /// chunk and no manifest.
    pub dry_run: bool,
    /// Golden queries to record with the backup: `queries` stored vectors of the captured
    /// state as queries, with their exact top-`k` over the state, or over a sample of it when
    /// its vectors are more than `budget_bytes` (which bounds both the memory and the
    /// brute-force pass). The metric is the state's (`distance` is not consulted).
    pub golden: Option<GoldenOptions>,
}

/// What recording golden queries came to.
#[derive(Debug, Clone)]
pub enum GoldenOutcome {
    /// Recorded: queries, documents searched, seconds of the brute-force pass.
    Recorded {
        /// Queries recorded.
        queries: usize,
        /// Documents searched.
        searched: u64,
        /// Seconds spent after the replay (top-k pass and storing).
        seconds: f64,
    },
    /// Not recorded, and why (the backup is made without them).
    Skipped(String),
}

/// What `create` did.
#[derive(Debug)]
pub struct CreateReport {
    /// The committed backup (in a dry run, the manifest that would have been committed).
    pub backup: StoredBackup,
    /// Chunk counters.
    pub stats: StoreStats,
    /// How many MANIFEST reads it took to open a consistent set of files.
    pub attempts: u32,
    /// Golden queries, when asked for.
    pub golden: Option<GoldenOutcome>,
}

/// The files of one MANIFEST generation, opened (so later deletions cannot take them away),
/// with the length of each that belongs to the captured state.
struct OpenState {
    manifest_bytes: Vec<u8>,
    /// (name, kind, file, captured length) in MANIFEST order: snapshot first, then segments.
    files: Vec<(String, FileKind, File, u64)>,
    /// What `fstat` said of each file when it was opened, in the same order.
    stamps: Vec<SourceStamp>,
    listing: Vec<String>,
    /// For the replay: the bytes of files being stored, as the store cuts them (in a mutex
    /// only so that the state can be shared between threads; it is never contended).
    taps: Mutex<BTreeMap<String, Receiver<Piece>>>,
    /// For the replay: where the WAL scan cuts each changed segment.
    cuts: Option<SharedCuts>,
}

/// Where each changed WAL segment ends (after its last whole frame) and the index of its
/// entries.
type WalCuts = BTreeMap<String, (u64, WalIndex)>;

/// The WAL scan's result, filled by the thread that scans while the snapshot is stored.
type SharedCuts = Arc<OnceLock<Result<WalCuts>>>;

/// The captured length of `name`: for a changed WAL segment, where the scan cut it (waiting
/// for the scan); for anything else, its length when opened.
fn captured_len(
    cuts: &OnceLock<Result<WalCuts>>,
    name: &str,
    kind: FileKind,
    opened: u64,
) -> Result<u64> {
    if kind != FileKind::Wal {
        return Ok(opened);
    }
    match cuts.wait() {
        Ok(m) => Ok(m.get(name).map_or(opened, |c| c.0)),
        Err(_) => Err(Error::Capture("the WAL scan failed".into())),
    }
}

/// Sets an error in the scan's slot if the scan stops without a result, so nobody waits for
/// it forever.
struct ScanGuard<'a>(&'a OnceLock<Result<WalCuts>>);

impl Drop for ScanGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .set(Err(Error::Capture("the WAL scan stopped".into())));
    }
}

/// What the storing side hands the replay of one file.
enum Piece {
    /// The next chunk of the file.
    Bytes(SharedChunk),
    /// The file is complete.
    End,
}

/// How many chunks the storing side may run ahead of the replay of one file.
const TAP_DEPTH: usize = 4;

/// Reads a file from the chunks the storing side cuts, so it is read from disk only once.
struct TapReader {
    rx: Receiver<Piece>,
    chunk: SharedChunk,
    pos: usize,
    ended: bool,
}

impl Read for TapReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Bytes(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Piece::End) => self.ended = true,
                Err(_) => return Err(io::Error::other("storing the file stopped before its end")),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl From<OpenedState> for OpenState {
    fn from(opened: OpenedState) -> Self {
        Self {
            stamps: opened.files.iter().map(|f| f.stamp).collect(),
            files: opened
                .files
                .into_iter()
                .map(|f| (f.name, f.kind, f.file, f.stamp.len))
                .collect(),
            manifest_bytes: opened.manifest_bytes,
            listing: opened.listing,
            taps: Mutex::default(),
            cuts: None,
        }
    }
}

impl FileSource for OpenState {
    fn open(&mut self, name: &str) -> io::Result<Box<dyn Read + '_>> {
        if name == "MANIFEST" {
            return Ok(Box::new(io::Cursor::new(self.manifest_bytes.as_slice())));
        }
        let taps = self
            .taps
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = self.files.iter().position(|(n, ..)| n == name) {
            // Files before this one that the replay never opened are not coming: let the
            // storing side stop feeding them (it never waits on a file the replay has left).
            for (earlier, ..) in &self.files[..at] {
                taps.remove(earlier);
            }
        }
        if let Some(rx) = taps.remove(name) {
            return Ok(Box::new(TapReader {
                rx,
                chunk: SharedChunk::default(),
                pos: 0,
                ended: false,
            }));
        }
        let (_, kind, f, opened) =
            self.files.iter().find(|(n, ..)| n == name).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{name} not captured"))
            })?;
        let len = match &self.cuts {
            Some(cuts) => captured_len(cuts, name, *kind, *opened).map_err(io::Error::other)?,
            None => *opened,
        };
        Ok(Box::new(io::BufReader::with_capacity(
            1 << 20,
            PrefixReader::new(f, len),
        )))
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self
            .files
            .iter()
            .map(|(n, ..)| n.clone())
            .chain(std::iter::once("MANIFEST".to_string()))
            .collect())
    }
}

/// Scans every changed WAL segment of `files` (see [`scan_wal`]).
fn scan_wals(
    files: &[(String, FileKind, File, u64)],
    unchanged: &BTreeMap<String, &FileEntry>,
) -> Result<WalCuts> {
    let mut cuts = WalCuts::new();
    for (name, kind, file, len) in files {
        if *kind != FileKind::Wal || unchanged.contains_key(name.as_str()) {
            continue;
        }
        let (valid, index) = scan_wal(name, file, *len)?;
        if valid < *len {
            tracing::debug!(segment = %name, whole = valid, seen = *len, "cut at the last whole frame");
        }
        cuts.insert(name.clone(), (valid, index));
    }
    Ok(cuts)
}

/// Takes a backup of `opts.data_dir`: reads the MANIFEST once, opens exactly the files it names
/// (retrying if one vanishes first), cuts WAL segments at their last whole frame, stores the
/// bytes in the chain's chunk store, replays the captured state to count live documents, and
/// commits the manifest last. The caller holds the repository lock.
///
/// # Errors
///
/// [`Error::DataDir`] or [`Error::Capture`] for a directory that cannot be captured,
/// [`Error::Format`] for damaged data-dir files, [`Error::Io`] when the repository cannot be
/// written; nothing is committed then.
pub fn create_backup(
    repo: &Repository,
    opts: &CreateOptions,
    progress: &dyn crate::Progress,
) -> Result<CreateReport> {
    let opened = open_consistent(&opts.data_dir)?;
    let attempts = opened.attempts;
    let state = OpenState::from(opened);
    let chain_id = opts
        .parent
        .as_ref()
        .map_or_else(|| opts.id.clone(), |p| p.chain_id.clone());
    let mut store = repo.chain_store(&chain_id)?;
    let lease = if opts.dry_run {
        store = store.dry_run();
        None
    } else {
        // Announced before anything of the chain is read, so a prune leaves the chain alone.
        let lease = crate::lease_for_create(
            repo.backend(),
            &chain_id,
            &opts.id,
            opts.now,
            crate::PRUNE_WAIT,
        )?;
        if let Some(p) = &opts.parent {
            if !repo.has_manifest(&p.chain_id, &p.id)? {
                return Err(Error::ParentGone(p.id.clone()));
            }
        }
        Some(lease)
    };
    match store_backup(repo, &store, &state, opts, lease.as_ref(), progress) {
        Ok(mut report) => {
            report.attempts = attempts;
            Ok(report)
        }
        Err(e) => {
            // Nothing names what this run wrote: remove it now rather than leave it to the
            // next prune (a full disk would otherwise stay full).
            store.discard_created();
            let needed =
                state.manifest_bytes.len() as u64 + state.files.iter().map(|f| f.3).sum::<u64>();
            Err(match repo.local_root() {
                Some(root) => e.or_no_space(root, needed),
                None => e,
            })
        }
    }
}

/// Stores the opened state in the chain and commits its manifest (in a dry run: computes
/// what would be stored and committed).
fn store_backup(
    repo: &Repository,
    store: &ChainStore,
    state: &OpenState,
    opts: &CreateOptions,
    lease: Option<&crate::Lease>,
    progress: &dyn crate::Progress,
) -> Result<CreateReport> {
    let unchanged = unchanged_files(store, state, opts.parent.as_ref());
    for name in unchanged.keys() {
        tracing::debug!(file = %name, "unchanged since the reference; not read again");
    }

    progress.start(
        "create",
        state.manifest_bytes.len() as u64 + state.files.iter().map(|f| f.3).sum::<u64>(),
    );
    let known_ids = opts
        .parent
        .as_ref()
        .and_then(|p| p.snapshot_ids.as_ref())
        .filter(|ids| {
            unchanged.contains_key(ids.snapshot.as_str()) && store.all_intact(&ids.chunks)
        });
    // The WAL scan (where each changed segment's last whole frame ends) runs while the
    // MANIFEST and the snapshot are stored; storing a segment waits for it.
    let cuts: SharedCuts = Arc::default();
    let stored = std::thread::scope(|s| {
        s.spawn(|| {
            let guard = ScanGuard(&cuts);
            let _ = guard.0.set(scan_wals(&state.files, &unchanged));
        });
        store_and_replay(store, state, &unchanged, known_ids, &cuts, opts, progress)
    });
    let mut indexes = match Arc::into_inner(cuts).and_then(OnceLock::into_inner) {
        Some(Ok(cuts)) => cuts,
        Some(Err(e)) => return Err(e),
        None => return Err(Error::Capture("the WAL scan left no result".into())),
    };
    let (mut files, mut counters, report, vector_count, id_list, sampler) = stored?;
    // `files` starts with the MANIFEST (read whole every time, never taken over), then
    // follows `state.files`.
    for (f, stamp) in files.iter_mut().skip(1).zip(&state.stamps) {
        if !unchanged.contains_key(f.name.as_str()) {
            f.wal_index = indexes.remove(&f.name).map(|(_, index)| index);
        }
        f.source = Some(*stamp);
    }
    let snapshot_ids = match id_list {
        IdList::Known => known_ids.cloned(),
        IdList::Recorded(bytes, count) => match &report.snapshot {
            Some((name, _)) => Some(store_id_list(store, name, &bytes, count, &mut counters)?),
            None => None,
        },
        IdList::Missing => None,
    };
    let (golden, golden_outcome) = match (opts.golden.as_ref(), sampler) {
        (Some(golden), Some(sampler)) => {
            record_golden(store, golden, sampler, &report, vector_count, &mut counters)?
        }
        _ => (None, None),
    };
    store.sync()?;

    let mut m = new_manifest(opts, &report, vector_count, &state.listing, files);
    m.stored_bytes = counters.stored_bytes;
    m.snapshot_ids = snapshot_ids;
    if golden.is_some() {
        m.format_version = GOLDEN_MANIFEST_VERSION;
    }
    m.golden = golden;
    let backup = if opts.dry_run {
        repo.preview_manifest(&m)?
    } else {
        if let Some(lease) = lease {
            lease.check()?;
        }
        repo.commit_manifest(&m)?
    };
    tracing::debug!(id = %m.id, new_chunks = counters.new_chunks, reused = counters.reused_chunks, dry_run = opts.dry_run, "manifest committed");
    Ok(CreateReport {
        backup,
        stats: counters,
        attempts: 0,
        golden: golden_outcome,
    })
}

/// The manifest of the new backup: who it is, what it captured and what that recovers to.
fn new_manifest(
    opts: &CreateOptions,
    report: &RecoveryReport,
    vector_count: u64,
    listing: &[String],
    files: Vec<FileEntry>,
) -> BackupManifest {
    let (chain_id, backup_type, parent_id) = match &opts.parent {
        None => (opts.id.clone(), BackupType::Full, None),
        Some(p) => (
            p.chain_id.clone(),
            BackupType::Incremental,
            Some(p.id.clone()),
        ),
    };
    let mut m = BackupManifest::new(opts.id.clone(), chain_id, opts.now, backup_type);
    m.subsec_nanos = opts.now_subsec_nanos;
    m.parent_id = parent_id;
    m.description.clone_from(&opts.description);
    m.size_bytes = files.iter().map(|f| f.size).sum();
    m.vector_count = vector_count;
    m.dimension = report.dimension;
    m.distance = report.distance;
    m.snapshot = report
        .snapshot
        .as_ref()
        .map(|(file, info)| SnapshotSummary {
            file: file.clone(),
            version: info.version,
            layout: format!("{:?}", info.layout),
            timestamp: info.timestamp,
            last_wal_seq: info.last_wal_seq,
            doc_count: info.documents,
        });
    m.wal = wal_summary(report);
    m.source = opts.data_dir.display().to_string();
    m.tool_version.clone_from(&opts.tool_version);
    m.skipped = skipped_files(listing, &files);
    m.files = files;
    m
}

/// Computes the golden queries of the replayed state and stores their file in the chain. A
/// state without a metric or without vectors gets none (the backup is made without them, and
/// the outcome says why).
fn record_golden(
    store: &ChainStore,
    opts: &GoldenOptions,
    sampler: GoldenSampler,
    report: &RecoveryReport,
    vector_count: u64,
    counters: &mut StoreStats,
) -> Result<(Option<GoldenQueries>, Option<GoldenOutcome>)> {
    let started = std::time::Instant::now();
    let Some(metric) = report.distance else {
        return Ok((
            None,
            Some(GoldenOutcome::Skipped(
                "the captured state records no distance metric".into(),
            )),
        ));
    };
    let file = match golden_from_sample(sampler, metric, vector_count, opts) {
        Ok(f) => f,
        Err(kyrodb_backup_datadir::Error::Empty) => {
            return Ok((
                None,
                Some(GoldenOutcome::Skipped(
                    "the captured state holds no vectors".into(),
                )),
            ))
        }
        // The backup matters more than its queries: a state they cannot be computed on (say,
        // vectors of two dimensions) is backed up without them, and the outcome says why.
        Err(e) => return Ok((None, Some(GoldenOutcome::Skipped(e.to_string())))),
    };
    let searched = file.sample.map_or(file.count, |s| s.documents);
    let mut bytes = serde_json::to_vec(&file)
        .map_err(|e| Error::Capture(format!("golden queries do not encode: {e}")))?;
    bytes.push(b'\n');
    let e = store.store_file(
        bytes.as_slice(),
        GoldenQueries::FILE_NAME,
        FileKind::Manifest,
        counters,
        &crate::NoProgress,
    )?;
    let queries = file.queries.len();
    Ok((
        Some(GoldenQueries {
            queries: queries as u64,
            k: file.k as u64,
            searched,
            size: e.size,
            hash: e.hash,
            chunks: e.chunks,
        }),
        Some(GoldenOutcome::Recorded {
            queries,
            searched,
            seconds: started.elapsed().as_secs_f64(),
        }),
    ))
}

/// The parent's entries for files that are still the ones it captured: same name and kind,
/// the same `fstat` identity (device, inode, length, modification and change times), captured
/// whole (no torn tail cut off), and every chunk still intact in the chain. Such files are
/// taken over without reading them; anything else is read and stored as usual (which also
/// repairs missing chunks).
fn unchanged_files<'p>(
    store: &ChainStore,
    state: &OpenState,
    parent: Option<&'p BackupManifest>,
) -> BTreeMap<String, &'p FileEntry> {
    let Some(parent) = parent else {
        return BTreeMap::new();
    };
    state
        .files
        .iter()
        .zip(&state.stamps)
        .filter_map(|((name, kind, ..), stamp)| {
            let e = parent.files.iter().find(|e| &e.name == name)?;
            let same = e.kind == *kind
                && e.source.as_ref() == Some(stamp)
                && e.size == stamp.len
                && (*kind != FileKind::Wal || e.wal_index.is_some())
                && store.all_intact(&e.chunks);
            same.then(|| (name.clone(), e))
        })
        .collect()
}

/// Stores a recorded snapshot id list in the chain.
fn store_id_list(
    store: &ChainStore,
    snapshot: &str,
    bytes: &[u8],
    count: u64,
    counters: &mut StoreStats,
) -> Result<SnapshotIds> {
    let e = store.store_file(
        bytes,
        snapshot,
        FileKind::Snapshot,
        counters,
        &crate::NoProgress,
    )?;
    Ok(SnapshotIds {
        snapshot: snapshot.to_string(),
        count,
        size: e.size,
        hash: e.hash,
        chunks: e.chunks,
    })
}

/// Where the new backup's snapshot id list comes from.
enum IdList {
    /// The reference's list served the replay: the new backup shares it.
    Known,
    /// Recorded while reading the snapshot: the encoded list and its number of ids.
    Recorded(Vec<u8>, u64),
    /// None (no snapshot, or the list outgrew its limit).
    Missing,
}

/// What the replay learnt: the recovery report, the live document count, and the snapshot's
/// id list.
type Replayed = (RecoveryReport, u64, IdList, Option<GoldenSampler>);

/// Replays the captured state to count live documents. With the reference's id list for an
/// unchanged snapshot, only the WAL is read; if that list cannot be read, the snapshot is.
fn replay(
    store: &ChainStore,
    mut src: OpenState,
    known_ids: Option<&SnapshotIds>,
    golden: Option<&GoldenOptions>,
) -> Result<Replayed> {
    let opts = RecoveryOptions {
        torn_tail_is_error: true,
    };
    // Golden queries need every vector, so the snapshot is read even when its id list is known.
    if let (Some(known), None) = (known_ids, golden) {
        let entry = known.entry();
        let mut ids = LiveIds::default();
        match recover_from_snapshot_ids(
            &mut src,
            &known.snapshot,
            &mut store.reader(&entry),
            known.count,
            &mut ids,
            &opts,
        ) {
            Ok(report) => return Ok((report, ids.len() as u64, IdList::Known, None)),
            Err(e) => tracing::warn!(
                error = %e,
                "the reference's snapshot id list cannot be used; reading the snapshot"
            ),
        }
    }
    let mut ids = LiveIds::default();
    let mut sampler = golden.map(|g| GoldenSampler::new(g.seed, g.budget_bytes));
    let mut sink = Counting {
        live: &mut ids,
        sampler: sampler.as_mut(),
    };
    let mut recorder = SnapshotIdRecorder::new(&mut sink);
    let report = recover(&mut src, &mut recorder, &opts)?;
    let list = match recorder.finish() {
        Some((bytes, count)) => IdList::Recorded(bytes, count),
        None => IdList::Missing,
    };
    Ok((report, ids.len() as u64, list, sampler))
}

/// What storing and replaying produced.
type Stored = (
    Vec<FileEntry>,
    StoreStats,
    RecoveryReport,
    u64,
    IdList,
    Option<GoldenSampler>,
);

/// Stores the captured files in the chain (taking over the unchanged ones) and, at the same
/// time on a second thread, replays them to learn what state they recover to. Each file is read
/// from disk once: the replay gets the chunks the storing side cuts, through a bounded channel
/// per file, and reads from disk only what is not being stored (files taken over).
fn store_and_replay(
    store: &ChainStore,
    state: &OpenState,
    unchanged: &BTreeMap<String, &FileEntry>,
    known_ids: Option<&SnapshotIds>,
    cuts: &SharedCuts,
    opts: &CreateOptions,
    progress: &dyn crate::Progress,
) -> Result<Stored> {
    let (dir, golden) = (&opts.data_dir, opts.golden.as_ref());
    let mut counters = StoreStats::default();
    let mut senders = BTreeMap::new();
    let mut taps = BTreeMap::new();
    for (name, ..) in &state.files {
        if !unchanged.contains_key(name.as_str()) {
            let (tx, rx) = sync_channel(TAP_DEPTH);
            senders.insert(name.clone(), tx);
            taps.insert(name.clone(), rx);
        }
    }
    let (stored, recovered) = std::thread::scope(|s| {
        let replay = s.spawn(move || -> Result<Replayed> {
            let src = OpenState {
                manifest_bytes: state.manifest_bytes.clone(),
                files: state
                    .files
                    .iter()
                    .map(|(n, k, f, l)| Ok((n.clone(), *k, f.try_clone()?, *l)))
                    .collect::<io::Result<_>>()
                    .map_err(|e| Error::io(dir, e))?,
                stamps: Vec::new(),
                listing: Vec::new(),
                taps: Mutex::new(taps),
                cuts: Some(Arc::clone(cuts)),
            };
            replay(store, src, known_ids, golden)
        });
        let stored = (move || -> Result<(Vec<FileEntry>, StoreStats)> {
            let mut files = vec![store.store_file(
                state.manifest_bytes.as_slice(),
                "MANIFEST",
                FileKind::Manifest,
                &mut counters,
                progress,
            )?];
            for (name, kind, file, opened) in &state.files {
                if let Some(e) = unchanged.get(name.as_str()) {
                    counters.unchanged_files += 1;
                    counters.unchanged_bytes += e.size;
                    progress.advance(e.size);
                    files.push((*e).clone());
                    continue;
                }
                // A replay that stopped reading this file (done, or failed) drops its end of
                // the channel; the file is then stored without feeding it.
                let len = captured_len(cuts, name, *kind, *opened)?;
                let tx = senders.remove(name);
                let mut feeding = tx.is_some();
                files.push(store.store_file_with(
                    PrefixReader::new(file, len),
                    name,
                    *kind,
                    &mut counters,
                    progress,
                    &mut |chunk| {
                        if let (true, Some(tx)) = (feeding, &tx) {
                            feeding = tx.send(Piece::Bytes(SharedChunk::clone(chunk))).is_ok();
                        }
                    },
                )?);
                if let Some(tx) = tx {
                    let _ = tx.send(Piece::End);
                }
            }
            Ok((files, counters))
        })();
        (stored, replay.join().expect("replay thread panicked"))
    });
    let (files, counters) = stored?;
    let (report, count, recorded, sampler) = recovered?;
    Ok((files, counters, report, count, recorded, sampler))
}

fn skipped_files(listing: &[String], captured: &[FileEntry]) -> Vec<SkippedFile> {
    let captured: BTreeSet<&str> = captured.iter().map(|f| f.name.as_str()).collect();
    listing
        .iter()
        .filter(|n| !captured.contains(n.as_str()))
        .map(|n| SkippedFile {
            name: n.clone(),
            reason: kyrodb_backup_datadir::capture::skip_reason(n).to_string(),
        })
        .collect()
}

/// Summarises the WAL entries a recovery read (all captured entries, applied or not).
pub fn wal_summary(report: &RecoveryReport) -> Option<WalSummary> {
    let mut out: Option<WalSummary> = None;
    for s in &report.segments {
        if s.entries == 0 {
            continue;
        }
        let (Some(fs), Some(ls), Some(ft), Some(lt)) =
            (s.first_seq, s.last_seq, s.first_timestamp, s.last_timestamp)
        else {
            continue;
        };
        let w = out.get_or_insert(WalSummary {
            first_seq: fs,
            last_seq: ls,
            first_timestamp: ft,
            last_timestamp: lt,
            entries: 0,
        });
        w.first_seq = w.first_seq.min(fs);
        w.last_seq = w.last_seq.max(ls);
        w.first_timestamp = w.first_timestamp.min(ft);
        w.last_timestamp = w.last_timestamp.max(lt);
        w.entries += s.entries;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every path under `dir` with its size (directories as 0).
    fn footprint(dir: &Path) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    out.push((p.clone(), 0));
                    stack.push(p);
                } else {
                    out.push((p.clone(), e.metadata().unwrap().len()));
                }
            }
        }
        out.sort();
        out
    }

    fn data_dir(dir: &Path, seed: u64) {
        use kyrodb_backup_format::engine::{
            DataDirManifest, WalEntry, WalLayout, WalOp, WalWriter,
        };
        std::fs::create_dir_all(dir).unwrap();
        let mut w = WalWriter::new(Vec::new()).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
        for seq in 1..=12_000u64 {
            // Incompressible embeddings, so the WAL spans several chunks.
            let embedding = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 40) as f32
                })
                .collect();
            let e = WalEntry {
                op: WalOp::Insert,
                doc_id: seq,
                embedding,
                metadata: vec![],
                seq_no: seq,
                timestamp: 1_760_970_600 + seq,
            };
            w.append(&e, WalLayout::W3).unwrap();
        }
        std::fs::write(dir.join("wal_1.wal"), w.into_inner()).unwrap();
        let m = DataDirManifest::modern(None, None, vec!["wal_1.wal".into()], 1_760_970_600);
        std::fs::write(dir.join("MANIFEST"), m.to_bytes()).unwrap();
    }

    fn options(data: &Path, id: &str, parent: Option<BackupManifest>) -> CreateOptions {
        CreateOptions {
            data_dir: data.to_path_buf(),
            id: id.into(),
            now: 1_760_980_000,
            now_subsec_nanos: 0,
            description: String::new(),
            tool_version: "test".into(),
            parent,
            dry_run: false,
            golden: None,
        }
    }

    /// The fault-injection counterpart of the tmpfs tests (which need root): a disk that fills
    /// after some chunk writes, for a new chain and for an incremental of an existing one.
    #[test]
    fn a_create_that_runs_out_of_space_removes_what_it_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        data_dir(&data, 1);
        let mut repo = Repository::open_or_init(&tmp.path().join("backups")).unwrap();
        let first = create_backup(
            &repo,
            &options(&data, "00000000-0000-4000-8000-000000000001", None),
            &crate::NoProgress,
        )
        .unwrap();
        // The data changes completely: an incremental must store every chunk again.
        std::fs::remove_dir_all(&data).unwrap();
        data_dir(&data, 2);
        let before = footprint(repo.local_root().unwrap());
        for (id, parent) in [
            ("00000000-0000-4000-8000-000000000002", None),
            (
                "00000000-0000-4000-8000-000000000003",
                Some(first.backup.manifest.clone()),
            ),
        ] {
            for writes in [0, 1, 2] {
                repo.writes_before_full = Some(writes);
                let e = create_backup(
                    &repo,
                    &options(&data, id, parent.clone()),
                    &crate::NoProgress,
                )
                .unwrap_err();
                assert!(e.is_no_space(), "{e}");
                assert!(matches!(e, Error::NoSpace { .. }), "{e}");
                assert_eq!(
                    footprint(repo.local_root().unwrap()),
                    before,
                    "{id} after {writes} writes"
                );
            }
        }
        repo.writes_before_full = None;
        assert_eq!(repo.list().unwrap().backups.len(), 1);
    }
}
