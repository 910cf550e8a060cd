//! Snapshot files: every layout from V1 to V4, streaming.

use roaring::RoaringTreemap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::engine::bincode::{Fields, Out};
use crate::{AnnSearchMode, DistanceMetric, Error, Metadata, Result};

/// Snapshot magic: `SNAP` read as a little-endian u32.
pub const SNAPSHOT_MAGIC: u32 = 0x534E_4150;

/// The snapshot layouts the engine has written, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotLayout {
    /// Version 1: documents only.
    V1,
    /// Version 2 without a metric (`LegacySnapshotV2`).
    LegacyV2,
    /// Version 2 with a metric.
    V2WithMetric,
    /// Version 3: optional metric and `last_wal_seq`.
    V3,
    /// Version 3 with ANN settings.
    V3WithAnn,
    /// Version 4, the current one: metric and `last_wal_seq`.
    V4,
}

impl SnapshotLayout {
    /// The payload's `version` field for this layout.
    pub fn version(self) -> u32 {
        match self {
            SnapshotLayout::V1 => 1,
            SnapshotLayout::LegacyV2 | SnapshotLayout::V2WithMetric => 2,
            SnapshotLayout::V3 | SnapshotLayout::V3WithAnn => 3,
            SnapshotLayout::V4 => 4,
        }
    }
}

/// The fixed fields at the start of every snapshot payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Payload version (1..=4).
    pub version: u32,
    /// Unix seconds when the snapshot was taken.
    pub timestamp: u64,
    /// The `doc_count` field.
    pub doc_count: u64,
    /// The `dimension` field.
    pub dimension: u64,
    /// Number of documents actually stored.
    pub documents: u64,
}

/// Everything a fully decoded snapshot says about itself (not its documents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The layout, decided by strict decoding.
    pub layout: SnapshotLayout,
    /// Payload version.
    pub version: u32,
    /// Unix seconds when the snapshot was taken.
    pub timestamp: u64,
    /// The `doc_count` field.
    pub doc_count: u64,
    /// The `dimension` field.
    pub dimension: u64,
    /// Number of documents stored.
    pub documents: u64,
    /// Metric, where the layout stores one.
    pub distance: Option<DistanceMetric>,
    /// ANN search mode (V3 with ANN settings).
    pub ann_search_mode: Option<AnnSearchMode>,
    /// Quantized re-rank multiplier (V3 with ANN settings).
    pub quantized_rerank_multiplier: Option<u64>,
    /// Highest WAL sequence number contained (0 where the layout has none).
    pub last_wal_seq: u64,
    /// Payload length.
    pub payload_len: u64,
    /// CRC-32 of the payload.
    pub crc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Documents,
    Metadata,
    Tail,
}

/// Decodes a snapshot one document at a time, so memory does not grow with the file.
///
/// Call [`next_document`](Self::next_document) until `None`, then
/// [`next_metadata`](Self::next_metadata) until `None`, then [`finish`](Self::finish), which
/// decides the layout from the remaining bytes, requires the payload to be consumed exactly,
/// and checks the CRC. Skipped steps are done by `finish`.
pub struct SnapshotReader<R: Read> {
    f: Fields<R>,
    header: SnapshotHeader,
    phase: Phase,
    docs_left: u64,
    meta_left: u64,
    /// Document ids seen (a compressed bitmap: dense ids take bits, not words).
    ids: RoaringTreemap,
    /// Ids of the metadata entries seen.
    meta_ids: RoaringTreemap,
    dimension_ok: bool,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the magic, the payload length and the payload's fixed fields.
    ///
    /// # Errors
    ///
    /// When the header does not decode (bad magic, unknown layout) or the reader fails.
    pub fn new(mut inner: R) -> Result<Self> {
        let mut head = [0u8; 12];
        read_head(&mut inner, &mut head)?;
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if magic != SNAPSHOT_MAGIC {
            return Err(Error::BadMagic {
                what: "snapshot",
                expected: SNAPSHOT_MAGIC,
                found: magic,
            });
        }
        let len = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
        let mut f = Fields::new(inner, len, "snapshot payload", 12, true);
        let version = f.u32()?;
        if !(1..=4).contains(&version) {
            return Err(f.malformed(format!("unknown snapshot version {version}")));
        }
        let timestamp = f.u64()?;
        let doc_count = f.u64()?;
        let dimension = f.u64()?;
        let documents = f.len(16)?;
        Ok(Self {
            f,
            header: SnapshotHeader {
                version,
                timestamp,
                doc_count,
                dimension,
                documents,
            },
            phase: Phase::Documents,
            docs_left: documents,
            meta_left: 0,
            ids: RoaringTreemap::new(),
            meta_ids: RoaringTreemap::new(),
            dimension_ok: true,
        })
    }

    /// The fixed fields.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Whether another document follows (and counts it); after the last, moves on to the
    /// metadata section.
    fn document_follows(&mut self) -> Result<bool> {
        if self.phase != Phase::Documents {
            return Ok(false);
        }
        if self.docs_left == 0 {
            self.phase = Phase::Metadata;
            if self.header.version > 1 {
                self.meta_left = self.f.len(16)?;
            }
            return Ok(false);
        }
        self.docs_left -= 1;
        Ok(true)
    }

    /// The next document, or `None` after the last.
    ///
    /// # Errors
    ///
    /// When the payload does not decode at the next document, or the reader fails.
    pub fn next_document(&mut self) -> Result<Option<(u64, Vec<f32>)>> {
        if !self.document_follows()? {
            return Ok(None);
        }
        let id = self.f.u64()?;
        let emb = self.f.f32_vec()?;
        if emb.len() as u64 != self.header.dimension {
            self.dimension_ok = false;
        }
        if !self.ids.insert(id) && self.header.version == 4 {
            return Err(self.f.malformed(format!("document id {id} appears twice")));
        }
        Ok(Some((id, emb)))
    }

    /// The next document's id, skipping its embedding (read, checked and checksummed like any
    /// byte, but not allocated): for callers that only count or index documents.
    ///
    /// # Errors
    ///
    /// When the payload does not decode at the next document, or the reader fails.
    pub fn next_document_id(&mut self) -> Result<Option<u64>> {
        if !self.document_follows()? {
            return Ok(None);
        }
        let id = self.f.u64()?;
        let n = self.f.len(4)?;
        if n != self.header.dimension {
            self.dimension_ok = false;
        }
        self.f.skip(n * 4)?;
        if !self.ids.insert(id) && self.header.version == 4 {
            return Err(self.f.malformed(format!("document id {id} appears twice")));
        }
        Ok(Some(id))
    }

    /// The next metadata entry, or `None` after the last (V1 has none).
    ///
    /// # Errors
    ///
    /// When the payload does not decode at the next metadata entry, or the reader fails.
    pub fn next_metadata(&mut self) -> Result<Option<(u64, Metadata)>> {
        while self.next_document()?.is_some() {}
        if self.phase != Phase::Metadata {
            return Ok(None);
        }
        if self.meta_left == 0 {
            self.phase = Phase::Tail;
            return Ok(None);
        }
        self.meta_left -= 1;
        let id = self.f.u64()?;
        let m = self.f.metadata()?;
        if self.header.version == 4 && !self.meta_ids.insert(id) {
            return Err(self
                .f
                .malformed(format!("metadata for id {id} appears twice")));
        }
        Ok(Some((id, m)))
    }

    /// Decodes the layout-specific tail, checks the payload was consumed exactly and the CRC,
    /// and (for V4) the engine's validity rules.
    ///
    /// # Errors
    ///
    /// When the rest does not decode, the CRC does not match, or bytes follow the payload.
    pub fn finish(mut self) -> Result<SnapshotInfo> {
        while self.next_metadata()?.is_some() {}
        let v = self.header.version;
        if self.f.remaining() > 64 {
            return Err(self.f.malformed(format!(
                "{} unexpected bytes after the metadata",
                self.f.remaining()
            )));
        }
        let tail_at = self.f.base + self.f.pos;
        let tail = self.f.rest()?;
        let crc = self.f.crc();
        let payload_len = self.f.limit;
        let mut inner = self.f.into_inner();
        let mut stored = [0u8; 4];
        read_exact_or_truncated(&mut inner, &mut stored, 12 + payload_len)?;
        let stored = u32::from_le_bytes(stored);
        if stored != crc {
            return Err(Error::Checksum {
                what: "snapshot payload",
                offset: 12,
                stored: format!("{stored:#010x}"),
                computed: format!("{crc:#010x}"),
            });
        }
        let t = decode_tail(v, &tail).ok_or_else(|| Error::Malformed {
            what: "snapshot payload",
            offset: tail_at,
            detail: format!("{} trailing bytes match no version-{v} layout", tail.len()),
        })?;
        let h = self.header;
        if t.layout == SnapshotLayout::V4 {
            let bad = |d: String| Error::Malformed {
                what: "snapshot",
                offset: 12,
                detail: d,
            };
            if h.doc_count != h.documents {
                return Err(bad(format!(
                    "doc_count {} but {} documents",
                    h.doc_count, h.documents
                )));
            }
            if !self.dimension_ok || (h.dimension == 0 && h.documents > 0) {
                return Err(bad(format!(
                    "an embedding does not have dimension {}",
                    h.dimension
                )));
            }
            if self.meta_ids != self.ids {
                return Err(bad("metadata entries do not match the document ids".into()));
            }
        }
        Ok(SnapshotInfo {
            layout: t.layout,
            version: v,
            timestamp: h.timestamp,
            doc_count: h.doc_count,
            dimension: h.dimension,
            documents: h.documents,
            distance: t.distance,
            ann_search_mode: t.ann,
            quantized_rerank_multiplier: t.multiplier,
            last_wal_seq: t.last_wal_seq,
            payload_len,
            crc,
        })
    }
}

fn read_head(r: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    read_exact_or_truncated(r, buf, 0)
}

fn read_exact_or_truncated(r: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<()> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::Truncated {
            what: "snapshot",
            offset,
        }),
        Err(e) => Err(e.into()),
    }
}

struct Tail {
    layout: SnapshotLayout,
    distance: Option<DistanceMetric>,
    ann: Option<AnnSearchMode>,
    multiplier: Option<u64>,
    last_wal_seq: u64,
}

/// Strict little parser over the tail bytes.
struct TailBytes<'a>(&'a [u8]);

impl TailBytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.0.get(..4)?;
        let v = u32::from_le_bytes(b.try_into().ok()?);
        self.0 = &self.0[4..];
        Some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.0.get(..8)?;
        let v = u64::from_le_bytes(b.try_into().ok()?);
        self.0 = &self.0[8..];
        Some(v)
    }
    fn metric(&mut self) -> Option<DistanceMetric> {
        DistanceMetric::from_index(self.u32()?)
    }
    /// `Option<T>`: `Some(None)` for none, `Some(Some(v))` for some, `None` when malformed.
    #[allow(clippy::option_option)] // the outer option is "did it parse", the inner the value
    fn option<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            1 => f(self).map(Some),
            _ => None,
        }
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn decode_tail(version: u32, tail: &[u8]) -> Option<Tail> {
    let plain = |layout| Tail {
        layout,
        distance: None,
        ann: None,
        multiplier: None,
        last_wal_seq: 0,
    };
    match version {
        1 => tail.is_empty().then(|| plain(SnapshotLayout::V1)),
        2 => {
            if tail.is_empty() {
                return Some(plain(SnapshotLayout::LegacyV2));
            }
            let mut t = TailBytes(tail);
            let d = t.metric()?;
            t.done().then_some(Tail {
                distance: Some(d),
                ..plain(SnapshotLayout::V2WithMetric)
            })
        }
        3 => {
            let mut t = TailBytes(tail);
            let v3 = (|| {
                let d = t.option(TailBytes::metric)?;
                let seq = t.u64()?;
                t.done().then_some(Tail {
                    distance: d,
                    last_wal_seq: seq,
                    ..plain(SnapshotLayout::V3)
                })
            })();
            if v3.is_some() {
                return v3;
            }
            let mut t = TailBytes(tail);
            let d = t.option(TailBytes::metric)?;
            let ann = t.option(|t| AnnSearchMode::from_index(t.u32()?))?;
            let mult = t.option(TailBytes::u64)?;
            let seq = t.u64()?;
            t.done().then_some(Tail {
                layout: SnapshotLayout::V3WithAnn,
                distance: d,
                ann,
                multiplier: mult,
                last_wal_seq: seq,
            })
        }
        4 => {
            let mut t = TailBytes(tail);
            let d = t.metric()?;
            let seq = t.u64()?;
            t.done().then_some(Tail {
                distance: Some(d),
                last_wal_seq: seq,
                ..plain(SnapshotLayout::V4)
            })
        }
        _ => None,
    }
}

/// A whole snapshot in memory (for small files, tests and migration).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Layout to encode with.
    pub layout: SnapshotLayout,
    /// Unix seconds when taken.
    pub timestamp: u64,
    /// The `doc_count` field.
    pub doc_count: u64,
    /// The `dimension` field.
    pub dimension: u64,
    /// Documents in file order.
    pub documents: Vec<(u64, Vec<f32>)>,
    /// Metadata entries in file order (empty for V1).
    pub metadata: Vec<(u64, Metadata)>,
    /// Metric (required by `V2WithMetric` and `V4`).
    pub distance: Option<DistanceMetric>,
    /// ANN mode (`V3WithAnn`).
    pub ann_search_mode: Option<AnnSearchMode>,
    /// Re-rank multiplier (`V3WithAnn`).
    pub quantized_rerank_multiplier: Option<u64>,
    /// Highest WAL sequence number contained.
    pub last_wal_seq: u64,
}

impl Snapshot {
    /// Decodes a whole snapshot.
    ///
    /// # Errors
    ///
    /// As [`SnapshotReader`]: when any part does not decode or the CRC does not match.
    pub fn read(r: impl Read) -> Result<Self> {
        let mut rd = SnapshotReader::new(r)?;
        let mut documents = Vec::new();
        while let Some(d) = rd.next_document()? {
            documents.push(d);
        }
        let mut metadata = Vec::new();
        while let Some(m) = rd.next_metadata()? {
            metadata.push(m);
        }
        let info = rd.finish()?;
        Ok(Self {
            layout: info.layout,
            timestamp: info.timestamp,
            doc_count: info.doc_count,
            dimension: info.dimension,
            documents,
            metadata,
            distance: info.distance,
            ann_search_mode: info.ann_search_mode,
            quantized_rerank_multiplier: info.quantized_rerank_multiplier,
            last_wal_seq: info.last_wal_seq,
        })
    }

    /// Encodes the snapshot in its layout, exactly as the engine does.
    ///
    /// # Errors
    ///
    /// When the writer fails.
    pub fn write(&self, mut w: impl Write) -> Result<()> {
        let mut p = Out::default();
        p.u32(self.layout.version());
        p.u64(self.timestamp);
        p.u64(self.doc_count);
        p.u64(self.dimension);
        p.u64(self.documents.len() as u64);
        for (id, emb) in &self.documents {
            p.u64(*id);
            p.f32_vec(emb);
        }
        if self.layout != SnapshotLayout::V1 {
            p.u64(self.metadata.len() as u64);
            for (id, m) in &self.metadata {
                p.u64(*id);
                p.metadata(m);
            }
        }
        let need_metric = || {
            self.distance.ok_or_else(|| Error::Malformed {
                what: "snapshot",
                offset: 0,
                detail: format!("layout {:?} needs a distance metric", self.layout),
            })
        };
        let opt_metric = |p: &mut Out, d: Option<DistanceMetric>| match d {
            None => p.u8(0),
            Some(d) => {
                p.u8(1);
                p.u32(d.index());
            }
        };
        match self.layout {
            SnapshotLayout::V1 | SnapshotLayout::LegacyV2 => {}
            SnapshotLayout::V2WithMetric => p.u32(need_metric()?.index()),
            SnapshotLayout::V3 => {
                opt_metric(&mut p, self.distance);
                p.u64(self.last_wal_seq);
            }
            SnapshotLayout::V3WithAnn => {
                opt_metric(&mut p, self.distance);
                match self.ann_search_mode {
                    None => p.u8(0),
                    Some(a) => {
                        p.u8(1);
                        p.u32(a.index());
                    }
                }
                match self.quantized_rerank_multiplier {
                    None => p.u8(0),
                    Some(m) => {
                        p.u8(1);
                        p.u64(m);
                    }
                }
                p.u64(self.last_wal_seq);
            }
            SnapshotLayout::V4 => {
                p.u32(need_metric()?.index());
                p.u64(self.last_wal_seq);
            }
        }
        let payload = p.0;
        w.write_all(&SNAPSHOT_MAGIC.to_le_bytes())?;
        w.write_all(&(payload.len() as u64).to_le_bytes())?;
        w.write_all(&payload)?;
        w.write_all(&crc32fast::hash(&payload).to_le_bytes())?;
        Ok(())
    }
}

/// The fixed fields of a V4 snapshot written by [`write_v4_snapshot`].
#[derive(Debug, Clone, Copy)]
pub struct V4SnapshotOptions {
    /// Unix seconds when taken.
    pub timestamp: u64,
    /// Embedding dimension.
    pub dimension: u64,
    /// Metric.
    pub distance: DistanceMetric,
    /// Highest WAL sequence number contained.
    pub last_wal_seq: u64,
    /// Number of documents.
    pub count: u64,
}

/// Writes a V4 snapshot of `opts.count` documents without holding them: `doc(i)` must return
/// the same document each time it is called for `i` (it is called three times: to size the
/// metadata, to write the documents, to write the metadata).
///
/// # Errors
///
/// When the writer fails, or the documents do not fit the V4 layout.
pub fn write_v4_snapshot<W: Write>(
    mut w: W,
    opts: &V4SnapshotOptions,
    mut doc: impl FnMut(u64) -> (u64, Vec<f32>, Metadata),
) -> Result<()> {
    let meta_len = |m: &Metadata| -> u64 {
        8 + m
            .iter()
            .map(|(k, v)| 16 + k.len() as u64 + v.len() as u64)
            .sum::<u64>()
    };
    let mut payload_len = 4 + 8 + 8 + 8 + 8 + 8 + 4 + 8;
    payload_len += opts.count * (16 + 4 * opts.dimension);
    for i in 0..opts.count {
        payload_len += 8 + meta_len(&doc(i).2);
    }
    w.write_all(&SNAPSHOT_MAGIC.to_le_bytes())?;
    w.write_all(&payload_len.to_le_bytes())?;
    let mut crc = crc32fast::Hasher::new();
    let mut put = |w: &mut W, bytes: &[u8]| -> Result<()> {
        crc.update(bytes);
        w.write_all(bytes)?;
        Ok(())
    };
    let mut p = Out::default();
    p.u32(4);
    p.u64(opts.timestamp);
    p.u64(opts.count);
    p.u64(opts.dimension);
    p.u64(opts.count);
    put(&mut w, &p.0)?;
    for i in 0..opts.count {
        let (id, emb, _) = doc(i);
        if emb.len() as u64 != opts.dimension {
            return Err(Error::Malformed {
                what: "snapshot",
                offset: 0,
                detail: format!(
                    "document {id} has {} values, not {}",
                    emb.len(),
                    opts.dimension
                ),
            });
        }
        let mut p = Out::default();
        p.u64(id);
        p.f32_vec(&emb);
        put(&mut w, &p.0)?;
    }
    put(&mut w, &opts.count.to_le_bytes())?;
    for i in 0..opts.count {
        let (id, _, m) = doc(i);
        let mut p = Out::default();
        p.u64(id);
        p.metadata(&m);
        put(&mut w, &p.0)?;
    }
    let mut p = Out::default();
    p.u32(opts.distance.index());
    p.u64(opts.last_wal_seq);
    put(&mut w, &p.0)?;
    w.write_all(&crc.finalize().to_le_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_v4_writer_matches_the_in_memory_encoder() {
        let doc = |i: u64| {
            let emb: Vec<f32> = (0..3).map(|j| (i * 3 + j) as f32 / 10.0).collect();
            (i * 10 + 1, emb, vec![("k".to_string(), format!("v{i}"))])
        };
        let opts = V4SnapshotOptions {
            timestamp: 1_760_970_600,
            dimension: 3,
            distance: DistanceMetric::Euclidean,
            last_wal_seq: 9,
            count: 5,
        };
        let mut streamed = Vec::new();
        write_v4_snapshot(&mut streamed, &opts, doc).unwrap();
        let s = Snapshot {
            layout: SnapshotLayout::V4,
            timestamp: opts.timestamp,
            doc_count: 5,
            dimension: 3,
            documents: (0..5).map(|i| (doc(i).0, doc(i).1)).collect(),
            metadata: (0..5).map(|i| (doc(i).0, doc(i).2)).collect(),
            distance: Some(DistanceMetric::Euclidean),
            ann_search_mode: None,
            quantized_rerank_multiplier: None,
            last_wal_seq: 9,
        };
        let mut whole = Vec::new();
        s.write(&mut whole).unwrap();
        assert_eq!(streamed, whole);
        assert_eq!(Snapshot::read(streamed.as_slice()).unwrap(), s);
    }
}
