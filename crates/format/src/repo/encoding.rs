//! Encodings of the backup repository: chunk files and backup manifests.
//!
//! Both are plain byte formats with their own checksums, so a repository copied anywhere (an
//! `aws s3 sync` round trip, a USB disk) can be checked without any other state.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use crate::{DistanceMetric, Error, Result};

/// Version of the repository layout and encodings written by this build.
///
/// A repository or manifest with a higher version is refused with a message naming both
/// versions; lower versions do not exist yet.
pub const REPOSITORY_VERSION: u32 = 1;

/// Highest backup manifest version this build reads. Manifests are written as version 1 unless
/// they record golden queries ([`GOLDEN_MANIFEST_VERSION`]): an older build refuses such a
/// manifest as newer instead of reading it without the golden file's chunks (its `prune` would
/// delete them).
pub const MANIFEST_VERSION: u32 = 2;

/// The manifest version of a backup that records golden queries.
pub const GOLDEN_MANIFEST_VERSION: u32 = 2;

/// Largest plain size a chunk may have. Chunkers must stay below it; decoders refuse more, so a
/// hostile manifest or chunk cannot make the reader allocate without bound.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// Largest encoded backup manifest accepted (a 10 GB data dir needs well under 1 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 64 * 1024 * 1024;

const CHUNK_MAGIC: &[u8; 4] = b"KBCK";
/// Sample size for deciding whether a chunk is worth compressing.
const PROBE: usize = 64 * 1024;
/// Length of a chunk file's header.
pub const CHUNK_HEADER_LEN: usize = 16;
const CODEC_STORED: u8 = 0;
const CODEC_LZ4: u8 = 1;
const MANIFEST_MAGIC: &str = "kyrodb-backup-manifest";

/// XXH3-128 of a byte string: names chunks and fingerprints whole files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub u128);

impl ContentHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(xxh3_128(bytes))
    }

    /// The 32-character lower-case hex form used in file names and manifests.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl FromStr for ContentHash {
    type Err = Error;

    /// Parses exactly 32 lower-case hex digits.
    fn from_str(s: &str) -> Result<Self> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::BackupManifest(format!(
                "{s:?} is not a 32-digit lower-case hex hash"
            )));
        }
        u128::from_str_radix(s, 16)
            .map(Self)
            .map_err(|e| Error::BackupManifest(format!("{s:?}: {e}")))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An encoded chunk, ready to be written to the chunk store.
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    /// The bytes of the chunk file (header and payload).
    pub bytes: Vec<u8>,
    /// Whether the payload is LZ4-compressed (it is only when that makes it smaller).
    pub compressed: bool,
}

/// Encodes a chunk file: a 16-byte header (`KBCK`, version 1, codec, two reserved zero bytes,
/// plain length and payload length as u32 LE) then the payload, LZ4-compressed when that saves
/// at least 1/32 of the size (judged first on a 64 KiB sample for large chunks).
///
/// The chunk's name (its [`ContentHash`] of `plain`) is its checksum: [`decode_chunk`] refuses a
/// chunk whose decoded bytes do not hash to it.
///
/// # Errors
///
/// When `plain` is larger than [`MAX_CHUNK_SIZE`].
pub fn encode_chunk(plain: &[u8]) -> Result<EncodedChunk> {
    let plain_len = u32::try_from(plain.len())
        .ok()
        .filter(|&n| n <= MAX_CHUNK_SIZE)
        .ok_or_else(|| Error::Chunk {
            hash: ContentHash::of(plain).to_hex(),
            detail: format!("{} bytes exceed the chunk size limit", plain.len()),
        })?;
    // Probe a 64 KiB sample first: float vectors barely compress, and compressing a whole
    // chunk only to throw the result away costs more than hashing it.
    let worth_trying = plain.len() <= PROBE || {
        let sample = &plain[..PROBE];
        lz4_flex::block::compress(sample).len() + PROBE / 32 < PROBE
    };
    let compressed = if worth_trying {
        lz4_flex::block::compress(plain)
    } else {
        Vec::new()
    };
    let (codec, payload): (u8, &[u8]) =
        if worth_trying && compressed.len() + plain.len() / 32 < plain.len() {
            (CODEC_LZ4, &compressed)
        } else {
            (CODEC_STORED, plain)
        };
    let mut bytes = Vec::with_capacity(CHUNK_HEADER_LEN + payload.len());
    bytes.extend_from_slice(CHUNK_MAGIC);
    bytes.push(1);
    bytes.push(codec);
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&plain_len.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    Ok(EncodedChunk {
        bytes,
        compressed: codec == CODEC_LZ4,
    })
}

/// Reads a chunk file's header: `(plain length, payload length)`, or `None` when it is not a
/// chunk header. A file whose length is not `CHUNK_HEADER_LEN + payload length` is damaged.
pub fn chunk_header(head: &[u8]) -> Option<(u32, u32)> {
    (head.len() >= CHUNK_HEADER_LEN
        && &head[..4] == CHUNK_MAGIC
        && head[4] == 1
        && head[6..8] == [0, 0])
    .then(|| {
        (
            u32::from_le_bytes([head[8], head[9], head[10], head[11]]),
            u32::from_le_bytes([head[12], head[13], head[14], head[15]]),
        )
    })
}

/// The plain bytes of a chunk file stored uncompressed, in place, when its header is well
/// formed and its lengths agree (its hash is the caller's to check); `None` for a compressed
/// chunk or one that is not well formed ([`decode_chunk`] then says what is wrong).
pub fn stored_chunk_payload(stored: &[u8]) -> Option<&[u8]> {
    let (plain, payload) = chunk_header(stored)?;
    (stored[5] == CODEC_STORED
        && plain == payload
        && plain <= MAX_CHUNK_SIZE
        && u64::from(payload) == (stored.len() - CHUNK_HEADER_LEN) as u64)
        .then(|| &stored[CHUNK_HEADER_LEN..])
}

/// Decodes a chunk file and checks it against what the manifest says of it: its plain size and
/// its content hash. Never allocates more than `expected_len` bytes for the plain data.
///
/// # Errors
///
/// [`Error::Chunk`](crate::Error::Chunk) when the header, the length or the hash is not the
/// expected one, or the payload does not decompress.
pub fn decode_chunk(stored: &[u8], expected: ContentHash, expected_len: u32) -> Result<Vec<u8>> {
    decode_chunk_with(stored, expected, expected_len, &ContentHash::of)
}

/// [`decode_chunk`] of a chunk named by another hash than [`ContentHash::of`] (a keyed hash,
/// in an encrypted repository).
///
/// # Errors
///
/// As [`decode_chunk`].
pub fn decode_chunk_with(
    stored: &[u8],
    expected: ContentHash,
    expected_len: u32,
    id_of: &dyn Fn(&[u8]) -> ContentHash,
) -> Result<Vec<u8>> {
    let bad = |detail: String| Error::Chunk {
        hash: expected.to_hex(),
        detail,
    };
    if expected_len > MAX_CHUNK_SIZE {
        return Err(bad(format!(
            "manifest claims {expected_len} bytes, above the {MAX_CHUNK_SIZE}-byte limit"
        )));
    }
    if stored.len() < CHUNK_HEADER_LEN || &stored[..4] != CHUNK_MAGIC {
        return Err(bad("not a chunk file (bad header)".into()));
    }
    if stored[4] != 1 || stored[6..8] != [0, 0] {
        return Err(bad(format!("unknown chunk version {}", stored[4])));
    }
    let plain_len = u32::from_le_bytes([stored[8], stored[9], stored[10], stored[11]]);
    if plain_len != expected_len {
        return Err(bad(format!(
            "header says {plain_len} bytes, manifest says {expected_len}"
        )));
    }
    let payload = &stored[CHUNK_HEADER_LEN..];
    let payload_len = u32::from_le_bytes([stored[12], stored[13], stored[14], stored[15]]);
    if payload.len() as u64 != u64::from(payload_len) {
        return Err(bad(format!(
            "payload is {} bytes, header says {payload_len} (truncated or appended to)",
            payload.len()
        )));
    }
    let plain = match stored[5] {
        CODEC_STORED => payload.to_vec(),
        CODEC_LZ4 => {
            let mut out = vec![0u8; expected_len as usize];
            let n = lz4_flex::block::decompress_into(payload, &mut out)
                .map_err(|e| bad(format!("lz4 payload does not decode: {e}")))?;
            if n != out.len() {
                return Err(bad(format!(
                    "lz4 payload decodes to {n} bytes, expected {expected_len}"
                )));
            }
            out
        }
        other => return Err(bad(format!("unknown codec {other}"))),
    };
    if plain.len() != expected_len as usize {
        return Err(bad(format!(
            "holds {} bytes, expected {expected_len}",
            plain.len()
        )));
    }
    let actual = id_of(&plain);
    if actual != expected {
        return Err(bad(format!("content hashes to {actual}")));
    }
    Ok(plain)
}

/// Whether a backup is a full backup (starts a chain) or an incremental (joins one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupType {
    /// Starts a new chain with its own chunk store.
    Full,
    /// Joins the chain of its parent and stores only chunks the chain lacks.
    Incremental,
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupType::Full => "Full",
            BackupType::Incremental => "Incremental",
        })
    }
}

/// The role a captured file plays in the data directory's consistent state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// The data directory's `MANIFEST`.
    Manifest,
    /// The snapshot the MANIFEST names.
    Snapshot,
    /// A WAL segment the MANIFEST lists, cut at its last whole frame.
    Wal,
}

/// One chunk of a captured file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// XXH3-128 of the chunk's plain bytes; also the chunk file's name.
    pub hash: ContentHash,
    /// Plain size in bytes.
    pub size: u32,
}

/// One captured file of the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the data directory (never a path).
    pub name: String,
    /// The file's role.
    pub kind: FileKind,
    /// Size in bytes (the sum of its chunks' sizes).
    pub size: u64,
    /// XXH3-128 of the whole file.
    pub hash: ContentHash,
    /// The file's chunks in order.
    pub chunks: Vec<ChunkRef>,
    /// For a WAL segment: which sequence numbers and seconds its entries cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_index: Option<WalIndex>,
    /// The data-directory file the bytes were read from, as `fstat` saw it; an incremental
    /// reuses this entry without reading the file when the file still looks the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStamp>,
}

/// What `fstat` said of a captured file: enough to tell, without reading it, that a file is
/// the one a backup already holds (the test rsync, restic and borg make, plus the change
/// time, which no program can set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// File size when it was opened.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
}

/// The document ids of a backup's snapshot, stored in the chain beside its files so that an
/// incremental taken while the snapshot is unchanged counts live documents without reading the
/// snapshot (the encoding is the format crate's snapshot id list). `verify` derives the list
/// from the snapshot again and compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotIds {
    /// The snapshot file (one of the backup's files) the ids were read from.
    pub snapshot: String,
    /// Number of ids.
    pub count: u64,
    /// Size of the encoded list.
    pub size: u64,
    /// XXH3-128 of the encoded list.
    pub hash: ContentHash,
    /// The list's chunks in order.
    pub chunks: Vec<ChunkRef>,
}

impl SnapshotIds {
    /// The list as a stored file (for readers of stored files).
    pub fn entry(&self) -> FileEntry {
        FileEntry {
            name: format!("{}.ids", self.snapshot),
            kind: FileKind::Snapshot,
            size: self.size,
            hash: self.hash,
            chunks: self.chunks.clone(),
            wal_index: None,
            source: None,
        }
    }
}

/// Golden queries recorded with a backup (`create --golden N`): the exact top-k answers of
/// sampled queries over the captured state, stored as a file (the datadir crate's golden file
/// JSON) in the backup's chain. A drill runs them on the restored state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldenQueries {
    /// Number of queries.
    pub queries: u64,
    /// Results per query.
    pub k: u64,
    /// Documents searched (all live ones, or a sample of them).
    pub searched: u64,
    /// Size of the stored file.
    pub size: u64,
    /// XXH3-128 of the stored file.
    pub hash: ContentHash,
    /// The file's chunks in order.
    pub chunks: Vec<ChunkRef>,
}

impl GoldenQueries {
    /// Name of the stored file in readers' messages.
    pub const FILE_NAME: &'static str = "golden.json";

    /// The golden file as a stored file (for readers of stored files).
    pub fn entry(&self) -> FileEntry {
        FileEntry {
            name: Self::FILE_NAME.to_string(),
            kind: FileKind::Manifest,
            size: self.size,
            hash: self.hash,
            chunks: self.chunks.clone(),
            wal_index: None,
            source: None,
        }
    }
}

/// The entries of a captured WAL segment, compressed to what point-in-time resolution needs:
/// one run per stretch of entries with consecutive sequence numbers and the same timestamp.
///
/// An engine writing a thousand entries a second needs one run per second, not per entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalIndex {
    /// Number of entries (whole frames) captured.
    pub entries: u64,
    /// Runs of entries: `[first seq, timestamp, count]`, in file order.
    pub runs: Vec<[u64; 3]>,
}

impl WalIndex {
    /// Adds the next entry of the segment.
    pub fn push(&mut self, seq: u64, timestamp: u64) {
        self.entries += 1;
        if let Some([first, ts, count]) = self.runs.last_mut() {
            let continues = if seq == 0 {
                *first == 0
            } else {
                first.checked_add(*count) == Some(seq)
            };
            if continues && *ts == timestamp {
                *count += 1;
                return;
            }
        }
        self.runs.push([seq, timestamp, 1]);
    }

    /// Every `(seq, timestamp)` the index covers, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs.iter().flat_map(|&[first, ts, count]| {
            (0..count).map(move |i| (if first == 0 { 0 } else { first + i }, ts))
        })
    }
}

/// What a backup records of the snapshot it captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// File name.
    pub file: String,
    /// The payload's version field.
    pub version: u32,
    /// Layout name as decoded (`V4`, `LegacyV2`, ...).
    pub layout: String,
    /// Unix seconds when the snapshot was taken.
    pub timestamp: u64,
    /// Highest WAL sequence number the snapshot contains (0 for layouts without one).
    pub last_wal_seq: u64,
    /// Number of documents in the snapshot.
    pub doc_count: u64,
}

/// What a backup records of the WAL it captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalSummary {
    /// Lowest sequence number captured (0 for legacy entries without one).
    pub first_seq: u64,
    /// Highest sequence number captured.
    pub last_seq: u64,
    /// Earliest entry timestamp (Unix seconds).
    pub first_timestamp: u64,
    /// Latest entry timestamp (Unix seconds).
    pub last_timestamp: u64,
    /// Number of entries captured.
    pub entries: u64,
}

/// A file of the data directory that the backup saw but did not capture, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedFile {
    /// File name.
    pub name: String,
    /// Why it is not part of the consistent state.
    pub reason: String,
}

/// Everything a repository knows about one backup; the body of a manifest file.
///
/// The manifest lists the complete captured state, so a restore needs only this manifest and its
/// chain's chunk store, never the other backups of the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BackupManifest {
    /// Encoding version ([`REPOSITORY_VERSION`] when written by this build).
    pub format_version: u32,
    /// Backup id (a lower-case hyphenated UUID).
    pub id: String,
    /// Id of the full backup that started this backup's chain (its own id for a full backup).
    pub chain_id: String,
    /// Unix second the backup was taken.
    pub timestamp: u64,
    /// Nanoseconds within that second: orders backups taken in the same second.
    #[serde(default)]
    pub subsec_nanos: u32,
    /// Full or incremental.
    pub backup_type: BackupType,
    /// The backup this one was made against (incrementals only).
    pub parent_id: Option<String>,
    /// Free text given by the operator.
    pub description: String,
    /// Total size of the captured files.
    pub size_bytes: u64,
    /// Bytes this backup added to the repository (new chunk files).
    pub stored_bytes: u64,
    /// Live documents the captured state recovers to (snapshot plus WAL replay).
    pub vector_count: u64,
    /// Vector dimension, when known.
    pub dimension: Option<u64>,
    /// Distance metric stored in the snapshot; `None` when the state does not record one.
    pub distance: Option<DistanceMetric>,
    /// The captured snapshot, if the state has one.
    pub snapshot: Option<SnapshotSummary>,
    /// The captured WAL entries, if any.
    pub wal: Option<WalSummary>,
    /// The data directory the backup was taken from, as given.
    pub source: String,
    /// Version of the tool that wrote the backup.
    pub tool_version: String,
    /// The captured files: the MANIFEST, the snapshot it names, the WAL segments it lists.
    pub files: Vec<FileEntry>,
    /// Files seen in the data directory and left out.
    #[serde(default)]
    pub skipped: Vec<SkippedFile>,
    /// The snapshot's document ids, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_ids: Option<SnapshotIds>,
    /// Golden queries recorded with the backup (manifest version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden: Option<GoldenQueries>,
}

impl BackupManifest {
    /// Creates a manifest with the fields every backup has; the rest start empty.
    pub fn new(id: String, chain_id: String, timestamp: u64, backup_type: BackupType) -> Self {
        Self {
            format_version: REPOSITORY_VERSION,
            id,
            chain_id,
            timestamp,
            subsec_nanos: 0,
            backup_type,
            parent_id: None,
            description: String::new(),
            size_bytes: 0,
            stored_bytes: 0,
            vector_count: 0,
            dimension: None,
            distance: None,
            snapshot: None,
            wal: None,
            source: String::new(),
            tool_version: String::new(),
            files: Vec::new(),
            skipped: Vec::new(),
            snapshot_ids: None,
            golden: None,
        }
    }

    /// Checks what a hostile or damaged manifest could get wrong beyond its checksum: ids,
    /// file names (plain KyroDB names only, no paths), sizes adding up, chunk sizes in range.
    ///
    /// # Errors
    ///
    /// [`Error::BackupManifest`](crate::Error::BackupManifest) naming the first rule broken.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BackupManifest(m));
        if self.format_version > MANIFEST_VERSION {
            return bad(format!(
                "written by a newer kyrodb_backup (format {}, this build reads up to {MANIFEST_VERSION}); upgrade kyrodb_backup",
                self.format_version
            ));
        }
        if self.golden.is_some() && self.format_version < GOLDEN_MANIFEST_VERSION {
            return bad(format!(
                "records golden queries in a version {} manifest",
                self.format_version
            ));
        }
        for id in [
            Some(&self.id),
            Some(&self.chain_id),
            self.parent_id.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !is_backup_id(id) {
                return bad(format!("{id:?} is not a backup id"));
            }
        }
        if (self.backup_type == BackupType::Full) != (self.id == self.chain_id) {
            return bad("chain id does not match the backup type".into());
        }
        let mut manifests = 0;
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            let name_ok = match f.kind {
                FileKind::Manifest => f.name == "MANIFEST",
                FileKind::Snapshot => crate::is_snapshot_file_name(&f.name),
                FileKind::Wal => crate::is_wal_file_name(&f.name),
            };
            if !name_ok {
                return bad(format!(
                    "file name {:?} is not a KyroDB {:?} file name",
                    f.name, f.kind
                ));
            }
            if !seen.insert(f.name.as_str()) {
                return bad(format!("file {:?} listed twice", f.name));
            }
            if f.kind == FileKind::Manifest {
                manifests += 1;
            }
            let total = chunks_total(&f.name, &f.chunks)?;
            if let Some(ix) = &f.wal_index {
                if f.kind != FileKind::Wal {
                    return bad(format!("{}: only WAL segments have a WAL index", f.name));
                }
                let n: u64 = ix.runs.iter().map(|r| r[2]).fold(0, u64::saturating_add);
                if n != ix.entries || ix.entries > f.size {
                    return bad(format!("{}: WAL index does not add up", f.name));
                }
            }
            if total != f.size {
                return bad(format!(
                    "{}: chunks add up to {total} bytes, file size is {}",
                    f.name, f.size
                ));
            }
        }
        if manifests != 1 {
            return bad(format!("{manifests} MANIFEST files listed, expected 1"));
        }
        if let Some(ids) = &self.snapshot_ids {
            let Some(snap) = self
                .files
                .iter()
                .find(|f| f.kind == FileKind::Snapshot && f.name == ids.snapshot)
            else {
                return bad(format!(
                    "snapshot id list names {:?}, which the backup does not hold",
                    ids.snapshot
                ));
            };
            let total = chunks_total(&format!("{} id list", ids.snapshot), &ids.chunks)?;
            // Every id takes at least one byte of the list, and a document more than one byte
            // of the snapshot.
            if total != ids.size || ids.count > ids.size || ids.count > snap.size {
                return bad(format!("{} id list: sizes do not add up", ids.snapshot));
            }
        }
        if let Some(g) = &self.golden {
            let total = chunks_total(GoldenQueries::FILE_NAME, &g.chunks)?;
            if total != g.size || g.queries == 0 || g.k == 0 || g.searched > self.vector_count {
                return bad(format!("{}: sizes do not add up", GoldenQueries::FILE_NAME));
            }
        }
        Ok(())
    }

    /// The distinct chunks this backup needs, in first-use order.
    pub fn chunk_refs(&self) -> Vec<ChunkRef> {
        let mut seen = std::collections::HashSet::new();
        self.files
            .iter()
            .flat_map(|f| f.chunks.iter().copied())
            .chain(
                self.snapshot_ids
                    .iter()
                    .flat_map(|s| s.chunks.iter().copied()),
            )
            .chain(self.golden.iter().flat_map(|g| g.chunks.iter().copied()))
            .filter(|c| seen.insert(c.hash))
            .collect()
    }
}

/// The size of a stored file from its chunks, each of which must have a possible size.
fn chunks_total(what: &str, chunks: &[ChunkRef]) -> Result<u64> {
    let mut total: u64 = 0;
    for c in chunks {
        if c.size == 0 || c.size > MAX_CHUNK_SIZE {
            return Err(Error::BackupManifest(format!(
                "{what}: chunk {} has an impossible size {}",
                c.hash, c.size
            )));
        }
        total = total.saturating_add(u64::from(c.size));
    }
    Ok(total)
}

/// Whether `s` has the shape of a backup id: a lower-case hyphenated UUID.
pub fn is_backup_id(s: &str) -> bool {
    crate::ids::is_uuid(s)
}

/// Encodes a manifest file: one header line `kyrodb-backup-manifest <version> <xxh3-128 of the
/// body> <body length>` then the JSON body. The header's hash is the manifest's checksum.
///
/// # Errors
///
/// When the manifest does not [`validate`](BackupManifest::validate).
pub fn encode_manifest(manifest: &BackupManifest) -> Result<Vec<u8>> {
    let body = serde_json::to_vec_pretty(manifest)
        .map_err(|e| Error::BackupManifest(format!("cannot encode: {e}")))?;
    let mut out = format!(
        "{MANIFEST_MAGIC} {} {} {}\n",
        manifest.format_version.max(1),
        ContentHash::of(&body),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out.push(b'\n');
    Ok(out)
}

/// The version in an encoded manifest's header line.
fn manifest_header_version(encoded: &[u8]) -> Option<u32> {
    let nl = encoded.iter().take(256).position(|&b| b == b'\n')?;
    std::str::from_utf8(&encoded[..nl])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// The checksum recorded in an encoded manifest's header (the XXH3-128 of its body).
///
/// # Errors
///
/// When the header line is missing or malformed.
pub fn manifest_checksum(encoded: &[u8]) -> Result<ContentHash> {
    split_manifest(encoded).map(|(hash, _)| hash)
}

fn split_manifest(encoded: &[u8]) -> Result<(ContentHash, &[u8])> {
    let bad = |m: &str| Error::BackupManifest(m.to_string());
    let nl = encoded
        .iter()
        .take(256)
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header line"))?;
    let header = std::str::from_utf8(&encoded[..nl]).map_err(|_| bad("header is not text"))?;
    let mut parts = header.split(' ');
    if parts.next() != Some(MANIFEST_MAGIC) {
        return Err(bad("not a kyrodb_backup manifest"));
    }
    let version: u32 = parts
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("header has no version"))?;
    if version == 0 {
        return Err(bad("header has version 0"));
    }
    if version > MANIFEST_VERSION {
        return Err(Error::BackupManifest(format!(
            "written by a newer kyrodb_backup (format {version}, this build reads up to {MANIFEST_VERSION}); upgrade kyrodb_backup"
        )));
    }
    let hash: ContentHash = parts
        .next()
        .ok_or_else(|| bad("header has no hash"))?
        .parse()?;
    let len: usize = parts
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("header has no length"))?;
    if parts.next().is_some() {
        return Err(bad("header has extra fields"));
    }
    let rest = &encoded[nl + 1..];
    if rest.len() != len + 1 || rest.last() != Some(&b'\n') {
        return Err(Error::BackupManifest(format!(
            "body is {} bytes, header says {len} (truncated or appended to)",
            rest.len().saturating_sub(1)
        )));
    }
    let body = &rest[..len];
    let actual = ContentHash::of(body);
    if actual != hash {
        return Err(Error::Checksum {
            what: "backup manifest",
            offset: (nl + 1) as u64,
            stored: hash.to_hex(),
            computed: actual.to_hex(),
        });
    }
    Ok((hash, body))
}

/// Decodes and validates a manifest file: header, checksum, JSON body, [`BackupManifest::validate`].
///
/// # Errors
///
/// When the header, the checksum, the JSON body or [`BackupManifest::validate`] fails.
pub fn decode_manifest(encoded: &[u8]) -> Result<BackupManifest> {
    if encoded.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(Error::BackupManifest(format!(
            "{} bytes, above the {MAX_MANIFEST_SIZE}-byte limit",
            encoded.len()
        )));
    }
    let (_, body) = split_manifest(encoded)?;
    let manifest: BackupManifest = serde_json::from_slice(body)
        .map_err(|e| Error::BackupManifest(format!("body does not decode: {e}")))?;
    manifest.validate()?;
    let header = manifest_header_version(encoded);
    if header != Some(manifest.format_version.max(1)) {
        return Err(Error::BackupManifest(format!(
            "header says format {}, the body {}",
            header.unwrap_or(0),
            manifest.format_version
        )));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BackupManifest {
        let id = "0b8f5e3e-2a6c-4d3e-9f7a-1c2b3d4e5f60".to_string();
        let mut m = BackupManifest::new(id.clone(), id, 1_795_529_700, BackupType::Full);
        let data = b"{\"version\":1}".to_vec();
        let hash = ContentHash::of(&data);
        m.files.push(FileEntry {
            name: "MANIFEST".into(),
            kind: FileKind::Manifest,
            size: data.len() as u64,
            hash,
            chunks: vec![ChunkRef {
                hash,
                size: data.len() as u32,
            }],
            wal_index: None,
            source: None,
        });
        m
    }

    #[test]
    fn stored_chunks_are_read_in_place_and_anything_else_is_left_to_decode() {
        // Incompressible bytes are stored as they are.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let plain: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let stored = encode_chunk(&plain).unwrap();
        assert!(!stored.compressed);
        assert_eq!(stored_chunk_payload(&stored.bytes), Some(plain.as_slice()));
        // A compressed chunk, a truncated one, one with a byte appended, a bad header: None.
        let zeros = encode_chunk(&vec![0u8; 100_000]).unwrap();
        assert!(zeros.compressed);
        assert_eq!(stored_chunk_payload(&zeros.bytes), None);
        let b = &stored.bytes;
        assert_eq!(stored_chunk_payload(&b[..b.len() - 1]), None);
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(stored_chunk_payload(&longer), None);
        let mut bad = b.clone();
        bad[0] ^= 1;
        assert_eq!(stored_chunk_payload(&bad), None);
        assert_eq!(stored_chunk_payload(&b[..8]), None);
    }

    #[test]
    fn chunk_round_trip_compressible_and_not() {
        let text = b"kyrodb ".repeat(10_000);
        let enc = encode_chunk(&text).unwrap();
        assert!(enc.compressed);
        assert!(enc.bytes.len() < text.len() / 10);
        let back = decode_chunk(&enc.bytes, ContentHash::of(&text), text.len() as u32).unwrap();
        assert_eq!(back, text);

        let noise: Vec<u8> = (0u32..4096)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let enc = encode_chunk(&noise).unwrap();
        let back = decode_chunk(&enc.bytes, ContentHash::of(&noise), noise.len() as u32).unwrap();
        assert_eq!(back, noise);
    }

    #[test]
    fn every_damaged_chunk_byte_is_caught() {
        let text = b"abcabcabd".repeat(300);
        let hash = ContentHash::of(&text);
        let enc = encode_chunk(&text).unwrap().bytes;
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x5a;
            assert!(
                decode_chunk(&bad, hash, text.len() as u32).is_err(),
                "flip at {i}"
            );
        }
        for n in 0..enc.len() {
            assert!(decode_chunk(&enc[..n], hash, text.len() as u32).is_err());
        }
    }

    #[test]
    fn chunk_that_lies_about_its_size_is_refused_without_allocating_it() {
        let text = b"x".repeat(1000);
        let enc = encode_chunk(&text).unwrap().bytes;
        let err = decode_chunk(&enc, ContentHash::of(&text), u32::MAX).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        let err = decode_chunk(&enc, ContentHash::of(&text), 999).unwrap_err();
        assert!(err.to_string().contains("manifest says 999"), "{err}");
    }

    #[test]
    fn manifest_round_trip_and_checksum() {
        let m = sample();
        let enc = encode_manifest(&m).unwrap();
        assert_eq!(decode_manifest(&enc).unwrap(), m);
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x01;
            assert!(decode_manifest(&bad).is_err(), "flip at {i} undetected");
        }
        assert!(decode_manifest(&enc[..enc.len() - 2]).is_err());
    }

    #[test]
    fn hostile_manifests_are_refused() {
        for name in [
            "../MANIFEST",
            "/etc/passwd",
            "wal_1.wal/..",
            "snapshot_x.snap",
        ] {
            let mut m = sample();
            m.files.push(FileEntry {
                name: name.into(),
                kind: FileKind::Wal,
                size: 0,
                hash: ContentHash(0),
                chunks: vec![],
                wal_index: None,
                source: None,
            });
            let enc = encode_manifest(&m).unwrap();
            let err = decode_manifest(&enc).unwrap_err().to_string();
            assert!(err.contains("not a KyroDB"), "{name}: {err}");
        }
        let mut m = sample();
        m.id = "../../x".into();
        assert!(decode_manifest(&encode_manifest(&m).unwrap()).is_err());
        let mut m = sample();
        m.files[0].size += 1;
        assert!(decode_manifest(&encode_manifest(&m).unwrap()).is_err());
    }

    #[test]
    fn golden_queries_need_a_version_2_manifest_whose_header_says_so() {
        let golden = |m: &mut BackupManifest| {
            let hash = ContentHash::of(b"{}");
            m.vector_count = 10;
            m.golden = Some(GoldenQueries {
                queries: 1,
                k: 1,
                searched: 10,
                size: 2,
                hash,
                chunks: vec![ChunkRef { hash, size: 2 }],
            });
        };
        // Written as version 2, it reads back with its golden record and chunks.
        let mut m = sample();
        golden(&mut m);
        m.format_version = GOLDEN_MANIFEST_VERSION;
        let enc = encode_manifest(&m).unwrap();
        assert!(enc.starts_with(b"kyrodb-backup-manifest 2 "));
        let back = decode_manifest(&enc).unwrap();
        assert_eq!(back, m);
        assert!(
            back.chunk_refs().iter().any(|c| c.size == 2),
            "golden chunks are needed"
        );
        // A golden record in a version 1 manifest: refused.
        let mut v1 = m.clone();
        v1.format_version = 1;
        let err = decode_manifest(&encode_manifest(&v1).unwrap()).unwrap_err();
        assert!(err.to_string().contains("golden"), "{err}");
        // A header that says 1 over a version 2 body: refused.
        let forged = String::from_utf8(enc).unwrap().replacen(
            "kyrodb-backup-manifest 2 ",
            "kyrodb-backup-manifest 1 ",
            1,
        );
        let err = decode_manifest(forged.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("header says format 1"), "{err}");
        // Sizes that do not add up: refused.
        let mut bad = m.clone();
        bad.golden.as_mut().unwrap().size = 3;
        assert!(decode_manifest(&encode_manifest(&bad).unwrap()).is_err());
    }

    #[test]
    fn newer_versions_are_refused_clearly() {
        let mut m = sample();
        m.format_version = MANIFEST_VERSION + 1;
        let err = decode_manifest(&encode_manifest(&m).unwrap()).unwrap_err();
        assert!(err.to_string().contains("newer kyrodb_backup"), "{err}");
        let enc = encode_manifest(&sample()).unwrap();
        let s = String::from_utf8(enc).unwrap().replacen(" 1 ", " 3 ", 1);
        let err = decode_manifest(s.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("upgrade"), "{err}");
    }

    #[test]
    fn wal_index_compresses_runs_and_expands_back() {
        let entries = [
            (1, 10),
            (2, 10),
            (3, 10),
            (4, 11),
            (5, 11),
            (7, 11),
            (8, 12),
        ];
        let mut ix = WalIndex::default();
        for (s, t) in entries {
            ix.push(s, t);
        }
        assert_eq!(
            ix.runs,
            vec![[1, 10, 3], [4, 11, 2], [7, 11, 1], [8, 12, 1]]
        );
        assert_eq!(ix.iter().collect::<Vec<_>>(), entries.to_vec());
        let mut legacy = WalIndex::default();
        legacy.push(0, 5);
        legacy.push(0, 5);
        legacy.push(0, 6);
        assert_eq!(legacy.runs, vec![[0, 5, 2], [0, 6, 1]]);
        assert_eq!(legacy.iter().count(), 3);
    }

    #[test]
    fn backup_ids() {
        assert!(is_backup_id("0b8f5e3e-2a6c-4d3e-9f7a-1c2b3d4e5f60"));
        assert!(!is_backup_id("0B8F5E3E-2a6c-4d3e-9f7a-1c2b3d4e5f60"));
        assert!(!is_backup_id("../8f5e3e-2a6c-4d3e-9f7a-1c2b3d4e5f60"));
        assert!(!is_backup_id("0b8f5e3e"));
    }
}
