//! The document ids of a snapshot, recorded the first time a backup reads it, so that an
//! incremental whose snapshot has not changed can count live documents from the WAL alone.
//!
//! Encoding: the magic `KBIDS001`, then one LEB128 varint per id in snapshot order (the zigzag
//! of its difference to the previous id, so dense ids take a byte each), then the snapshot's
//! [`SnapshotInfo`] as JSON to the end. The number of ids is kept by the caller (the backup
//! manifest), and the list's integrity by the store's hashes.

use std::io::Read;

use crate::engine::{recover_with_snapshot_loader, FileSource, RecoveryOptions, RecoveryReport};
use crate::{Error, Metadata, Result, SnapshotInfo, StateSink};

const IDS_MAGIC: &[u8; 8] = b"KBIDS001";

/// Largest id list a [`SnapshotIdRecorder`] keeps in memory; past it the list is dropped (the
/// next incremental then reads the snapshot again, as without a list).
pub const MAX_ID_LIST_BYTES: usize = 32 << 20;

/// Largest JSON trailer a list may carry.
const MAX_INFO_BYTES: u64 = 64 << 10;

/// A [`StateSink`] wrapper that passes everything on and records the ids of the snapshot's
/// documents (those inserted before [`StateSink::snapshot_loaded`]) as an encoded id list.
pub struct SnapshotIdRecorder<'a> {
    inner: &'a mut dyn StateSink,
    buf: Option<Vec<u8>>,
    prev: u64,
    count: u64,
    loading: bool,
}

impl<'a> SnapshotIdRecorder<'a> {
    /// Records while feeding `inner`.
    pub fn new(inner: &'a mut dyn StateSink) -> Self {
        Self {
            inner,
            buf: Some(IDS_MAGIC.to_vec()),
            prev: 0,
            count: 0,
            loading: true,
        }
    }

    /// The encoded list and the number of ids in it, once a snapshot has been loaded; `None`
    /// when there was no snapshot or the list outgrew [`MAX_ID_LIST_BYTES`].
    pub fn finish(self) -> Option<(Vec<u8>, u64)> {
        if self.loading {
            return None;
        }
        self.buf.map(|b| (b, self.count))
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // The mask keeps seven bits, so the cast is exact.
        buf.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn zigzag(delta: i64) -> u64 {
    ((delta << 1) ^ (delta >> 63)).cast_unsigned()
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1).cast_signed() ^ -((v & 1).cast_signed())
}

impl StateSink for SnapshotIdRecorder<'_> {
    fn insert(&mut self, id: u64, embedding: Vec<f32>, metadata: Metadata) {
        if self.loading {
            if let Some(buf) = &mut self.buf {
                put_varint(buf, zigzag(id.wrapping_sub(self.prev).cast_signed()));
                self.prev = id;
                self.count += 1;
                if buf.len() > MAX_ID_LIST_BYTES {
                    self.buf = None;
                }
            }
        }
        self.inner.insert(id, embedding, metadata);
    }
    fn delete(&mut self, id: u64) {
        self.inner.delete(id);
    }
    fn update_metadata(&mut self, id: u64, metadata: Metadata) {
        self.inner.update_metadata(id, metadata);
    }
    fn wants_contents(&self) -> bool {
        self.inner.wants_contents()
    }
    fn snapshot_loaded(&mut self, info: &SnapshotInfo) {
        if self.loading {
            self.loading = false;
            if let Some(buf) = &mut self.buf {
                match serde_json::to_vec(info) {
                    Ok(json) => buf.extend_from_slice(&json),
                    Err(_) => self.buf = None,
                }
            }
        }
        self.inner.snapshot_loaded(info);
    }
}

/// Reads an encoded id list of `count` ids (as a [`SnapshotIdRecorder`] wrote it), passing
/// each id on, and returns the snapshot's description stored after them. Damage is an error,
/// never a panic; memory stays bounded whatever `count` claims.
///
/// # Errors
///
/// When the list does not decode, holds another number of ids than `count`, or `each` fails.
pub fn read_id_list(
    rd: &mut dyn Read,
    count: u64,
    mut each: impl FnMut(u64),
) -> Result<SnapshotInfo> {
    let mut rd = std::io::BufReader::with_capacity(1 << 16, rd);
    let mut offset = 0u64;
    let mut magic = [0u8; 8];
    read_exact(&mut rd, &mut magic, &mut offset)?;
    if &magic != IDS_MAGIC {
        return Err(malformed(0, "not a snapshot id list".into()));
    }
    let mut prev = 0u64;
    for _ in 0..count {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let mut b = [0u8; 1];
            read_exact(&mut rd, &mut b, &mut offset)?;
            if shift == 63 && b[0] > 1 {
                return Err(malformed(offset, "varint overflows 64 bits".into()));
            }
            v |= u64::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        prev = prev.wrapping_add(unzigzag(v).cast_unsigned());
        each(prev);
    }
    let mut json = Vec::new();
    rd.take(MAX_INFO_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(Error::Io)?;
    if json.len() as u64 > MAX_INFO_BYTES {
        return Err(malformed(offset, "snapshot description too long".into()));
    }
    serde_json::from_slice(&json)
        .map_err(|e| malformed(offset, format!("snapshot description: {e}")))
}

fn read_exact(rd: &mut impl Read, buf: &mut [u8], offset: &mut u64) -> Result<()> {
    rd.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Truncated {
                what: "snapshot id list",
                offset: *offset,
            }
        } else {
            Error::Io(e)
        }
    })?;
    *offset += buf.len() as u64;
    Ok(())
}

fn malformed(offset: u64, detail: String) -> Error {
    Error::Malformed {
        what: "snapshot id list",
        offset,
        detail,
    }
}

/// Recovers like [`recover`](crate::engine::recover) but takes the snapshot's document ids
/// from a list recorded when it was first read (see [`SnapshotIdRecorder`]) instead of
/// reading the snapshot, so that counting the live documents of an unchanged snapshot plus a
/// grown WAL reads only the WAL. Only for sinks that do not want contents; `count` is the
/// number of ids the list holds (from the backup manifest). The MANIFEST must still name
/// `snapshot`.
///
/// # Errors
///
/// As [`recover`](crate::engine::recover), and when the id list does not decode or does not
/// describe `snapshot`.
pub fn recover_from_snapshot_ids(
    src: &mut dyn FileSource,
    snapshot: &str,
    ids: &mut dyn Read,
    count: u64,
    sink: &mut dyn StateSink,
    opts: &RecoveryOptions,
) -> Result<RecoveryReport> {
    let mut ids = Some(ids);
    recover_with_snapshot_loader(
        src,
        snapshot,
        &mut |sink| {
            let ids = ids.take().expect("the snapshot is loaded once");
            read_id_list(ids, count, |id| sink.insert(id, Vec::new(), Vec::new()))
                .map_err(|e| e.in_file(format!("{snapshot} id list")))
        },
        sink,
        opts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{LiveIds, SnapshotLayout};

    fn info() -> SnapshotInfo {
        SnapshotInfo {
            layout: SnapshotLayout::V4,
            version: 4,
            timestamp: 1_795_529_700,
            doc_count: 5,
            dimension: 3,
            documents: 5,
            distance: None,
            ann_search_mode: None,
            quantized_rerank_multiplier: None,
            last_wal_seq: 42,
            payload_len: 1000,
            crc: 7,
        }
    }

    fn record(ids: &[u64]) -> (Vec<u8>, u64) {
        let mut live = LiveIds::default();
        let mut r = SnapshotIdRecorder::new(&mut live);
        for &id in ids {
            r.insert(id, Vec::new(), Vec::new());
        }
        r.snapshot_loaded(&info());
        // Inserts after the snapshot (WAL replay) are not part of the list.
        r.insert(99, Vec::new(), Vec::new());
        r.finish().unwrap()
    }

    #[test]
    fn ids_round_trip_in_order_whatever_their_gaps() {
        let ids = [7, 8, 9, 0, u64::MAX, 1 << 40, 3];
        let (bytes, count) = record(&ids);
        assert_eq!(count, 7);
        let mut back = Vec::new();
        let got = read_id_list(&mut bytes.as_slice(), count, |id| back.push(id)).unwrap();
        assert_eq!(back, ids);
        assert_eq!(got, info());
        // Dense ids take a byte each.
        let (dense, _) = record(&(0..1000).collect::<Vec<_>>());
        assert!(dense.len() < 8 + 1000 + 400, "{}", dense.len());
    }

    #[test]
    fn no_snapshot_records_no_list() {
        let mut live = LiveIds::default();
        let mut r = SnapshotIdRecorder::new(&mut live);
        r.insert(1, Vec::new(), Vec::new());
        assert!(r.finish().is_none());
    }

    #[test]
    fn damaged_lists_are_errors_not_panics() {
        let (bytes, count) = record(&[1, 2, 300, 70_000]);
        for cut in 0..bytes.len() {
            let r = read_id_list(&mut &bytes[..cut], count, |_| {});
            assert!(r.is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0xff;
            // Either an error or a different list: never a panic.
            let _ = read_id_list(&mut bad.as_slice(), count, |_| {});
        }
        let mut overlong = IDS_MAGIC.to_vec();
        overlong.extend_from_slice(&[0xff; 11]);
        assert!(matches!(
            read_id_list(&mut overlong.as_slice(), 1, |_| {}),
            Err(Error::Malformed { .. })
        ));
        assert!(read_id_list(&mut bytes.as_slice(), count + 1, |_| {}).is_err());
    }
}
