//! Recovering a data directory's state exactly as the engine does.

use std::collections::BTreeMap;

use roaring::RoaringTreemap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::{
    DataDirManifest, DistanceMetric, Error, Metadata, Result, SnapshotInfo, SnapshotReader, WalOp,
    WalReader,
};

/// Where recovery reads files from: a directory, bytes captured in a backup, anything.
pub trait FileSource {
    /// Opens a file of the state by name.
    ///
    /// # Errors
    ///
    /// `NotFound` when the source has no such file; any error of reading it.
    fn open(&mut self, name: &str) -> io::Result<Box<dyn Read + '_>>;
    /// Names of the files present (the legacy MANIFEST layout needs it).
    ///
    /// # Errors
    ///
    /// When the names cannot be read.
    fn list(&mut self) -> io::Result<Vec<String>>;
}

/// A data directory as a [`FileSource`].
#[derive(Debug, Clone)]
pub struct DirSource {
    dir: PathBuf,
}

impl DirSource {
    /// Reads from `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
        }
    }
}

impl FileSource for DirSource {
    fn open(&mut self, name: &str) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            File::open(self.dir.join(name))?,
        )))
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            v.push(e?.file_name().to_string_lossy().into_owned());
        }
        v.sort();
        Ok(v)
    }
}

/// Where recovered state goes.
pub trait StateSink {
    /// Inserts or replaces a document.
    fn insert(&mut self, id: u64, embedding: Vec<f32>, metadata: Metadata);
    /// Removes a document.
    fn delete(&mut self, id: u64);
    /// Replaces the metadata of an existing document (no effect on a missing one).
    fn update_metadata(&mut self, id: u64, metadata: Metadata);
    /// Whether the sink looks at embeddings and metadata; when it does not, recovery skips
    /// decoding them from the snapshot (the bytes are still read and checksummed).
    fn wants_contents(&self) -> bool {
        true
    }
    /// Called once the snapshot's documents are all in, before the first WAL entry.
    fn snapshot_loaded(&mut self, _info: &SnapshotInfo) {}
}

/// A recovered document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The embedding.
    pub embedding: Vec<f32>,
    /// The metadata.
    pub metadata: BTreeMap<String, String>,
}

/// The whole recovered state in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FullState {
    /// Documents by id.
    pub docs: BTreeMap<u64, Document>,
}

impl StateSink for FullState {
    fn insert(&mut self, id: u64, embedding: Vec<f32>, metadata: Metadata) {
        self.docs.insert(
            id,
            Document {
                embedding,
                metadata: metadata.into_iter().collect(),
            },
        );
    }
    fn delete(&mut self, id: u64) {
        self.docs.remove(&id);
    }
    fn update_metadata(&mut self, id: u64, metadata: Metadata) {
        if let Some(d) = self.docs.get_mut(&id) {
            d.metadata = metadata.into_iter().collect();
        }
    }
}

impl FullState {
    /// Renders the state like the fixtures' `expected.json`: `count`, and `docs` keyed by id
    /// with `emb` (f32 values widened to f64) and `meta`.
    pub fn to_expected_json(&self) -> Value {
        let docs: serde_json::Map<String, Value> = self
            .docs
            .iter()
            .map(|(id, d)| {
                let emb: Vec<f64> = d.embedding.iter().map(|&x| f64::from(x)).collect();
                (id.to_string(), json!({"emb": emb, "meta": d.metadata}))
            })
            .collect();
        json!({"count": self.docs.len(), "docs": docs})
    }

    /// Reads an `expected.json` (numbers are narrowed to f32, as the engine stores them).
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`](crate::Error::Malformed) when `v` is not in the fixtures' shape.
    pub fn from_expected_json(v: &Value) -> Result<Self> {
        let bad = |m: &str| Error::Manifest(format!("expected.json: {m}"));
        let mut s = FullState::default();
        for (id, d) in v["docs"].as_object().ok_or_else(|| bad("no docs"))? {
            let id: u64 = id.parse().map_err(|_| bad("doc id is not a number"))?;
            let embedding = d["emb"]
                .as_array()
                .ok_or_else(|| bad("no emb"))?
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32).ok_or_else(|| bad("emb value")))
                .collect::<Result<Vec<f32>>>()?;
            let metadata = d["meta"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            s.docs.insert(
                id,
                Document {
                    embedding,
                    metadata,
                },
            );
        }
        Ok(s)
    }
}

/// Only the ids of live documents, in a compressed bitmap: memory grows with the document count,
/// never with the data (about a bit per id when ids are dense, two bytes when clustered; ids
/// scattered over the whole 64-bit range cost more).
#[derive(Debug, Clone, Default)]
pub struct LiveIds {
    ids: RoaringTreemap,
}

impl LiveIds {
    /// Number of live documents.
    pub fn len(&self) -> usize {
        usize::try_from(self.ids.len()).unwrap_or(usize::MAX)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl StateSink for LiveIds {
    fn insert(&mut self, id: u64, _: Vec<f32>, _: Metadata) {
        self.ids.insert(id);
    }
    fn wants_contents(&self) -> bool {
        false
    }
    fn delete(&mut self, id: u64) {
        self.ids.remove(id);
    }
    fn update_metadata(&mut self, _: u64, _: Metadata) {}
}

/// How strictly to recover.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecoveryOptions {
    /// `false`: as the engine on a live directory (a torn final frame ends a segment);
    /// `true`: for files a backup captured, which end at a whole frame, so a torn tail is damage.
    pub torn_tail_is_error: bool,
}

/// What recovery read from one WAL segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentReport {
    /// File name.
    pub name: String,
    /// Whole frames read.
    pub entries: u64,
    /// Entries applied (not covered by the snapshot).
    pub applied: u64,
    /// Lowest sequence number.
    pub first_seq: Option<u64>,
    /// Highest sequence number.
    pub last_seq: Option<u64>,
    /// Earliest timestamp.
    pub first_timestamp: Option<u64>,
    /// Latest timestamp.
    pub last_timestamp: Option<u64>,
    /// Offset after the last whole frame.
    pub valid_len: u64,
    /// Whether the segment ended in a torn frame.
    pub torn_tail: bool,
    /// Applied inserts whose embedding length is not the state's dimension.
    pub other_dimension: u64,
}

/// What a recovery found.
#[derive(Debug, Clone)]
pub struct RecoveryReport {
    /// The MANIFEST.
    pub manifest: DataDirManifest,
    /// The snapshot loaded, with its file name.
    pub snapshot: Option<(String, SnapshotInfo)>,
    /// The WAL segments replayed, in order.
    pub segments: Vec<SegmentReport>,
    /// The snapshot's dimension, else the first inserted embedding's length.
    pub dimension: Option<u64>,
    /// The metric the snapshot stores.
    pub distance: Option<DistanceMetric>,
}

impl RecoveryReport {
    /// Whether the recovered state uses a layout older than the current ones: the text
    /// MANIFEST, a snapshot whose version is not 4, or WAL entries without sequence numbers
    /// (W1, W2).
    pub fn in_legacy_layouts(&self) -> bool {
        matches!(self.manifest, DataDirManifest::Legacy { .. })
            || self.snapshot.as_ref().is_some_and(|(_, i)| i.version != 4)
            || self.segments.iter().any(|s| s.first_seq == Some(0))
    }

    /// Why the current engine would refuse to start on the recovered directory, if it would:
    /// a snapshot whose version is not 4 (the engine loads no other), or inserts whose
    /// dimension is not the state's. Missing files and damaged frames already fail the
    /// recovery itself.
    pub fn current_engine_refusal(&self) -> Option<String> {
        if let Some((name, info)) = &self.snapshot {
            if info.version != 4 {
                return Some(format!(
                    "snapshot {name} is {:?} (version {}); the current engine loads only version 4",
                    info.layout, info.version
                ));
            }
        }
        let odd: u64 = self.segments.iter().map(|s| s.other_dimension).sum();
        (odd > 0).then(|| {
            format!(
                "{odd} WAL inserts have a dimension other than the state's {}",
                self.dimension.unwrap_or(0)
            )
        })
    }

    /// The highest WAL sequence number the recovered state reflects: the last replayed
    /// segment entry, or the snapshot's `last_wal_seq` (0 for an empty state).
    pub fn last_seq(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|s| s.last_seq)
            .chain(self.snapshot.as_ref().map(|s| s.1.last_wal_seq))
            .max()
            .unwrap_or(0)
    }
}

fn open<'a>(src: &'a mut dyn FileSource, name: &str) -> Result<Box<dyn Read + 'a>> {
    src.open(name).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::Manifest(format!("{name} is listed but missing")).in_file(name)
        } else {
            Error::Io(e).in_file(name)
        }
    })
}

fn read_manifest(src: &mut dyn FileSource) -> Result<DataDirManifest> {
    let mut mbytes = Vec::new();
    open(src, "MANIFEST")?
        .take(1 << 20)
        .read_to_end(&mut mbytes)
        .map_err(|e| Error::Io(e).in_file("MANIFEST"))?;
    DataDirManifest::parse(&mbytes).map_err(|e| e.in_file("MANIFEST"))
}

/// Recovers the state as the engine does: MANIFEST, the named snapshot, then every listed WAL
/// segment in order, skipping entries the snapshot already holds (by sequence number, or for
/// legacy entries without one, by timestamp). Errors name the file.
///
/// # Errors
///
/// When a file the state needs is missing or does not decode, the way the engine would refuse to
/// start (a torn WAL tail only when `opts.torn_tail_is_error`).
pub fn recover(
    src: &mut dyn FileSource,
    sink: &mut dyn StateSink,
    opts: &RecoveryOptions,
) -> Result<RecoveryReport> {
    let manifest = read_manifest(src)?;
    let mut snapshot = None;
    if let Some(name) = manifest.snapshot_file() {
        let info = (|| {
            let mut rd = SnapshotReader::new(open(src, &name)?)?;
            // Stream: documents first (without metadata), then each metadata entry onto its
            // document, so nothing but the sink grows with the snapshot.
            if sink.wants_contents() {
                while let Some((id, emb)) = rd.next_document()? {
                    sink.insert(id, emb, Vec::new());
                }
                while let Some((id, m)) = rd.next_metadata()? {
                    sink.update_metadata(id, m);
                }
            } else {
                while let Some(id) = rd.next_document_id()? {
                    sink.insert(id, Vec::new(), Vec::new());
                }
            }
            let info = rd.finish()?;
            Ok::<_, Error>(info)
        })()
        .map_err(|e| e.in_file(&name))?;
        sink.snapshot_loaded(&info);
        snapshot = Some((name, info));
    }
    replay_wal(src, manifest, snapshot, sink, *opts)
}

/// Recovers like [`recover`], except that the snapshot the MANIFEST names (which must be
/// `snapshot`) is not read: `load` puts its documents into the sink and returns its
/// description (a repository's recorded id list does this for counting, see
/// `kyrodb_backup_format::repo::recover_from_snapshot_ids`). Only for sinks that do not want
/// contents.
///
/// # Errors
///
/// As [`recover`], and whatever `load` fails with.
pub fn recover_with_snapshot_loader(
    src: &mut dyn FileSource,
    snapshot: &str,
    load: &mut dyn FnMut(&mut dyn StateSink) -> Result<SnapshotInfo>,
    sink: &mut dyn StateSink,
    opts: &RecoveryOptions,
) -> Result<RecoveryReport> {
    if sink.wants_contents() {
        return Err(Error::Manifest(
            "a snapshot id list cannot stand in for contents".into(),
        ));
    }
    let manifest = read_manifest(src)?;
    if manifest.snapshot_file().as_deref() != Some(snapshot) {
        return Err(Error::Manifest(format!(
            "the MANIFEST does not name {snapshot}, the snapshot of the id list"
        )));
    }
    let info = load(sink)?;
    sink.snapshot_loaded(&info);
    replay_wal(
        src,
        manifest,
        Some((snapshot.to_string(), info)),
        sink,
        *opts,
    )
}

/// Replays every listed WAL segment onto the snapshot's state.
fn replay_wal(
    src: &mut dyn FileSource,
    manifest: DataDirManifest,
    snapshot: Option<(String, SnapshotInfo)>,
    sink: &mut dyn StateSink,
    opts: RecoveryOptions,
) -> Result<RecoveryReport> {
    let mut dimension = snapshot.as_ref().map(|(_, i)| i.dimension);
    let mut checked_dimension = dimension.filter(|&d| d > 0);
    let distance = snapshot.as_ref().and_then(|(_, i)| i.distance);
    let (snap_seq, snap_ts) = snapshot
        .as_ref()
        .map_or((0, None), |(_, i)| (i.last_wal_seq, Some(i.timestamp)));
    let listing = match &manifest {
        DataDirManifest::Legacy { .. } => src.list().map_err(Error::Io)?,
        DataDirManifest::Modern(_) => Vec::new(),
    };
    let mut segments = Vec::new();
    for name in manifest.wal_segments(&listing) {
        let report = (|| {
            let mut rd = WalReader::new(open(src, &name)?)?;
            let mut r = SegmentReport {
                name: name.clone(),
                ..SegmentReport::default()
            };
            while let Some(frame) = rd.next_frame()? {
                let e = frame.entry;
                r.entries += 1;
                r.first_seq = Some(r.first_seq.map_or(e.seq_no, |s| s.min(e.seq_no)));
                r.last_seq = Some(r.last_seq.map_or(e.seq_no, |s| s.max(e.seq_no)));
                r.first_timestamp = Some(
                    r.first_timestamp
                        .map_or(e.timestamp, |s| s.min(e.timestamp)),
                );
                r.last_timestamp =
                    Some(r.last_timestamp.map_or(e.timestamp, |s| s.max(e.timestamp)));
                let covered = if e.seq_no != 0 {
                    e.seq_no <= snap_seq
                } else {
                    snap_ts.is_some_and(|t| e.timestamp <= t)
                };
                if covered {
                    continue;
                }
                r.applied += 1;
                match e.op {
                    WalOp::Insert => {
                        let len = e.embedding.len() as u64;
                        if dimension.is_none() {
                            dimension = Some(len);
                        }
                        // An empty snapshot (dimension 0) sets no dimension for the inserts.
                        if *checked_dimension.get_or_insert(len) != len {
                            r.other_dimension += 1;
                        }
                        sink.insert(e.doc_id, e.embedding, e.metadata);
                    }
                    WalOp::Delete => sink.delete(e.doc_id),
                    WalOp::UpdateMetadata => sink.update_metadata(e.doc_id, e.metadata),
                }
            }
            r.valid_len = rd.valid_len();
            r.torn_tail = rd.torn();
            if r.torn_tail && opts.torn_tail_is_error {
                return Err(Error::Truncated {
                    what: "WAL frame",
                    offset: r.valid_len,
                });
            }
            Ok::<_, Error>(r)
        })()
        .map_err(|e| e.in_file(&name))?;
        segments.push(report);
    }
    Ok(RecoveryReport {
        manifest,
        snapshot,
        segments,
        dimension,
        distance,
    })
}

/// A digest of the recovered state: per document, hashes of its embedding and of its metadata.
/// Two states are equal exactly when their digests are (up to hash collisions), in memory
/// proportional to the document count only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDigest {
    docs: std::collections::HashMap<u64, (u128, u128)>,
}

impl StateDigest {
    /// Number of live documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

fn metadata_digest(metadata: &Metadata) -> u128 {
    let sorted: BTreeMap<&str, &str> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut bytes = Vec::new();
    for (k, v) in sorted {
        bytes.extend_from_slice(&(k.len() as u64).to_le_bytes());
        bytes.extend_from_slice(k.as_bytes());
        bytes.extend_from_slice(&(v.len() as u64).to_le_bytes());
        bytes.extend_from_slice(v.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_128(&bytes)
}

impl StateSink for StateDigest {
    fn insert(&mut self, id: u64, embedding: Vec<f32>, metadata: Metadata) {
        let raw: Vec<u8> = embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.docs.insert(
            id,
            (
                xxhash_rust::xxh3::xxh3_128(&raw),
                metadata_digest(&metadata),
            ),
        );
    }
    fn delete(&mut self, id: u64) {
        self.docs.remove(&id);
    }
    fn update_metadata(&mut self, id: u64, metadata: Metadata) {
        if let Some(d) = self.docs.get_mut(&id) {
            d.1 = metadata_digest(&metadata);
        }
    }
}
