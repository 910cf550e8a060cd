//! Encodings of continuous WAL archiving: timeline ids, the object names of archived WAL pieces
//! and of the bases they replay onto, and piece objects.
//!
//! A piece is a run of consecutive engine WAL frames (sequence numbers `first_seq..=last_seq`,
//! every one of them, W3 entries only) copied verbatim from a data directory. Its object name
//! ([`PieceName::file_name`]) says what it holds; the object repeats the name in its header, so
//! a renamed object is refused, and ends in an XXH3-128 of everything before it. Integers are
//! little-endian.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `KYROWAL1` |
//! | 8 | 4 | header length H (u32, 68 in version 1) |
//! | 12 | 4 | version (u32, 1) |
//! | 16 | 8 | `first_seq` (u64) |
//! | 24 | 8 | `last_seq` (u64) |
//! | 32 | 8 | `first_ts`: lowest entry timestamp (u64, Unix seconds) |
//! | 40 | 8 | `last_ts`: highest entry timestamp (u64, Unix seconds) |
//! | 48 | 8 | `observed_at` (u64, Unix seconds) |
//! | 56 | 4 | `level` (u32, at most 255) |
//! | 60 | 8 | frame count (u64) |
//! | 68 | 8 | body length B (u64) |
//! | 76 | 4 | CRC-32 of the last frame's entry (u32) |
//! | 12 + H | B | body: the frames, each `u32 length L`, `L entry bytes`, `u32 CRC-32 of the entry` |
//! | 12 + H + B | 16 | XXH3-128 ([`ContentHash`]) of bytes `0..12 + H + B` (u128) |
//!
//! No object exceeds [`MAX_PIECE_SIZE`] bytes. Decoding is strict: every byte is accounted for
//! and every frame is checked again, so a piece that decodes can be appended to a WAL segment.

use std::fmt;
use std::ops::Range;

use super::encoding::{is_backup_id, ContentHash};
use crate::engine::{decode_entry, WalLayout, MAX_WAL_ENTRY};
use crate::{Error, Result};

/// Largest piece object, header and hash included: [`encode_piece`] refuses frames that would
/// make a bigger one, and [`decode_piece`] refuses a bigger object before allocating anything.
pub const MAX_PIECE_SIZE: usize = 64 << 20;

const PIECE_MAGIC: &[u8; 8] = b"KYROWAL1";
const PIECE_VERSION: u32 = 1;
const HEADER_LEN: usize = 68;
const BODY_AT: usize = 12 + HEADER_LEN;
const HASH_LEN: usize = 16;
const WHAT: &str = "WAL piece";
const FRAME: &str = "WAL piece frame";

/// Exactly `n` decimal digits.
fn digits(s: &str, n: usize) -> Option<u64> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32
}

fn bad<T>(what: &'static str, at: usize, detail: String) -> Result<T> {
    let offset = at as u64;
    Err(Error::Malformed {
        what,
        offset,
        detail,
    })
}

fn truncated<T>(what: &'static str, at: usize) -> Result<T> {
    let offset = at as u64;
    Err(Error::Truncated { what, offset })
}

/// Names one timeline of archived WAL history: when it started and a tag telling apart
/// timelines started in the same second. Written `0000000000-00000000` (10 digits, 8 hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimelineId {
    /// Unix second the timeline started.
    pub started_at: u64,
    /// Distinguishes timelines started in the same second.
    pub tag: u32,
}

impl TimelineId {
    /// Parses exactly 10 decimal digits, `-`, 8 lower-case hex digits.
    pub fn parse(s: &str) -> Option<TimelineId> {
        let (at, tag) = s.split_once('-')?;
        if tag.len() != 8 || !tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        Some(TimelineId {
            started_at: digits(at, 10)?,
            tag: u32::from_str_radix(tag, 16).ok()?,
        })
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}-{:08x}", self.started_at, self.tag)
    }
}

/// What an archived piece holds, and its object name: the WAL frames of sequence numbers
/// `first_seq..=last_seq` (all of them), whose entry timestamps range over
/// `first_ts..=last_ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PieceName {
    /// Sequence number of the first frame (never 0).
    pub first_seq: u64,
    /// Sequence number of the last frame (at least `first_seq`).
    pub last_seq: u64,
    /// Lowest entry timestamp (Unix seconds).
    pub first_ts: u64,
    /// Highest entry timestamp (Unix seconds, at least `first_ts`).
    pub last_ts: u64,
    /// A Unix second whose meaning the archiver defines.
    pub observed_at: u64,
    /// The piece's level, whose meaning the archiver defines.
    pub level: u8,
}

impl PieceName {
    /// `<first_seq:020>-<last_seq:020>-<first_ts:010>-<last_ts:010>-<observed_at:010>-<level>.frames`.
    pub fn file_name(&self) -> String {
        let n = self;
        format!(
            "{:020}-{:020}-{:010}-{:010}-{:010}-{}.frames",
            n.first_seq, n.last_seq, n.first_ts, n.last_ts, n.observed_at, n.level
        )
    }

    /// The strict inverse of [`PieceName::file_name`]: `None` for any other string, and for
    /// names of impossible pieces (`first_seq` 0, `last_seq < first_seq`, `first_ts > last_ts`).
    pub fn parse(name: &str) -> Option<PieceName> {
        let mut parts = name.strip_suffix(".frames")?.split('-');
        let mut next = |n| digits(parts.next()?, n);
        let (first_seq, last_seq) = (next(20)?, next(20)?);
        let (first_ts, last_ts, observed_at) = (next(10)?, next(10)?, next(10)?);
        let level = parts
            .next()
            .filter(|l| l.bytes().all(|b| b.is_ascii_digit()))?;
        let level = level.parse().ok()?;
        let piece = PieceName {
            first_seq,
            last_seq,
            first_ts,
            last_ts,
            observed_at,
            level,
        };
        let possible = first_seq != 0 && first_seq <= last_seq && first_ts <= last_ts;
        (possible && parts.next().is_none() && piece.file_name() == name).then_some(piece)
    }
}

/// The object name of a base: a backup that archived pieces replay onto.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BaseName {
    /// Highest WAL sequence number whose effect the base contains.
    pub last_wal_seq: u64,
    /// Unix seconds of the base's snapshot (below 10^10, as names have 10 digits for it).
    pub snapshot_ts: u64,
    /// The backup's id (a lower-case hyphenated UUID).
    pub id: String,
}

impl BaseName {
    /// `<last_wal_seq:020>-<snapshot_ts:010>-<id>.manifest`.
    pub fn file_name(&self) -> String {
        let BaseName {
            last_wal_seq,
            snapshot_ts,
            id,
        } = self;
        format!("{last_wal_seq:020}-{snapshot_ts:010}-{id}.manifest")
    }

    /// The strict inverse of [`BaseName::file_name`]; the id must be a backup id.
    pub fn parse(name: &str) -> Option<BaseName> {
        let (seq, rest) = name.strip_suffix(".manifest")?.split_once('-')?;
        let (ts, id) = rest.split_once('-').filter(|(_, id)| is_backup_id(id))?;
        let (last_wal_seq, snapshot_ts) = (digits(seq, 20)?, digits(ts, 10)?);
        Some(BaseName {
            last_wal_seq,
            snapshot_ts,
            id: id.to_string(),
        })
    }
}

/// One frame of a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceFrame {
    /// The entry's sequence number.
    pub seq: u64,
    /// The entry's timestamp (Unix seconds).
    pub timestamp: u64,
    /// CRC-32 of the entry bytes.
    pub crc: u32,
    /// The frame's bytes (length prefix and CRC included) within the walked bytes.
    pub range: Range<usize>,
}

/// A decoded piece: its name, the CRC of its last entry, and its frames, all checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// What the piece holds.
    pub name: PieceName,
    /// CRC-32 of the last frame's entry.
    pub last_crc: u32,
    /// The frames, in order; their ranges index [`Piece::body`].
    pub frames: Vec<PieceFrame>,
    body: Vec<u8>,
}

impl Piece {
    /// The raw frames, back to back, as the engine wrote them.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// Walks raw engine WAL frames strictly: every frame whole, its CRC matching, its entry a W3
/// entry with a non-zero sequence number one above the previous frame's. Empty input yields
/// no frames.
///
/// # Errors
///
/// [`Error::Truncated`] for a partial frame at the end, [`Error::Checksum`] for a CRC mismatch,
/// [`Error::Malformed`] for anything else; offsets count from the start of `frames`.
pub fn piece_frames(frames: &[u8]) -> Result<Vec<PieceFrame>> {
    walk(frames, 0)
}

fn walk(bytes: &[u8], base: usize) -> Result<Vec<PieceFrame>> {
    let mut out: Vec<PieceFrame> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let at = base + pos;
        if bytes.len() - pos < 4 {
            return truncated(FRAME, base + bytes.len());
        }
        let len = le32(bytes, pos);
        if len == 0 || len > MAX_WAL_ENTRY {
            let msg = format!("entry length {len} is outside 1..={MAX_WAL_ENTRY}");
            return bad(FRAME, at, msg);
        }
        let end = pos + 8 + len as usize;
        let Some(frame) = bytes.get(pos..end) else {
            return truncated(FRAME, base + bytes.len());
        };
        let entry = &frame[4..frame.len() - 4];
        let (crc, computed) = (le32(frame, frame.len() - 4), crc32fast::hash(entry));
        if crc != computed {
            return Err(Error::Checksum {
                what: FRAME,
                offset: at as u64,
                stored: format!("{crc:#010x}"),
                computed: format!("{computed:#010x}"),
            });
        }
        let Some((e, layout)) = decode_entry(entry) else {
            return bad(FRAME, at, "entry matches no known layout".into());
        };
        if layout != WalLayout::W3 || e.seq_no == 0 {
            let msg = format!("{layout:?} entry with sequence number 0; pieces hold W3 entries");
            return bad(FRAME, at, msg);
        }
        if let Some(prev) = out
            .last()
            .filter(|p| p.seq.checked_add(1) != Some(e.seq_no))
        {
            let msg = format!("sequence number {} follows {}", e.seq_no, prev.seq);
            return bad(FRAME, at, msg);
        }
        let (seq, timestamp) = (e.seq_no, e.timestamp);
        out.push(PieceFrame {
            seq,
            timestamp,
            crc,
            range: pos..end,
        });
        pos = end;
    }
    Ok(out)
}

/// Whether walked frames are exactly what `name` says.
fn check_covers(name: &PieceName, frames: &[PieceFrame], at: usize) -> Result<()> {
    let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
        return bad(WHAT, at, "holds no frames".into());
    };
    let (n, seqs) = (name, (first.seq, last.seq));
    if seqs != (n.first_seq, n.last_seq) {
        let detail = format!("frames hold sequence numbers {}..={}", seqs.0, seqs.1);
        let msg = format!("{detail}, the name says {}..={}", n.first_seq, n.last_seq);
        return bad(WHAT, at, msg);
    }
    let min = frames.iter().map(|f| f.timestamp).min().unwrap_or(0);
    let max = frames.iter().map(|f| f.timestamp).max().unwrap_or(0);
    if (min, max) != (n.first_ts, n.last_ts) {
        let detail = format!("frames hold timestamps {min}..={max}");
        let msg = format!("{detail}, the name says {}..={}", n.first_ts, n.last_ts);
        return bad(WHAT, at, msg);
    }
    Ok(())
}

/// The bytes before the body: magic, header length, header.
fn head(name: &PieceName, count: usize, body_len: usize, last_crc: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(BODY_AT);
    out.extend_from_slice(PIECE_MAGIC);
    for v in [HEADER_LEN as u32, PIECE_VERSION] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        name.first_seq,
        name.last_seq,
        name.first_ts,
        name.last_ts,
        name.observed_at,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&u32::from(name.level).to_le_bytes());
    for v in [count as u64, body_len as u64] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&last_crc.to_le_bytes());
    out
}

/// Encodes a piece object (in the layout tabulated in this module's documentation) from raw WAL
/// frames, after checking that they are exactly what `name` says: they walk strictly
/// ([`piece_frames`]), their sequence numbers are `name.first_seq..=name.last_seq` and their
/// lowest and highest timestamps `name.first_ts` and `name.last_ts`.
///
/// # Errors
///
/// When `name` is not one [`PieceName::parse`] accepts back, the object would exceed
/// [`MAX_PIECE_SIZE`], or the frames are not what the name says.
pub fn encode_piece(name: &PieceName, frames: &[u8]) -> Result<Vec<u8>> {
    let file_name = name.file_name();
    if PieceName::parse(&file_name).as_ref() != Some(name) {
        return bad(WHAT, 0, format!("{file_name} is not a valid piece name"));
    }
    if frames.len() > MAX_PIECE_SIZE - BODY_AT - HASH_LEN {
        let detail = format!("{} bytes of frames exceed the piece limit", frames.len());
        return bad(WHAT, 0, format!("{detail} ({MAX_PIECE_SIZE} bytes)"));
    }
    let walked = piece_frames(frames)?;
    check_covers(name, &walked, 0)?;
    let last_crc = walked.last().map_or(0, |f| f.crc);
    let mut out = head(name, walked.len(), frames.len(), last_crc);
    out.reserve_exact(frames.len() + HASH_LEN);
    out.extend_from_slice(frames);
    let hash = ContentHash::of(&out);
    out.extend_from_slice(&hash.0.to_le_bytes());
    Ok(out)
}

/// Decodes a piece object stored under the name `expected`, checking its size, magic, lengths,
/// hash and version, that its header states `expected`, and every frame again as
/// [`encode_piece`] does, with the frame count and last CRC of the header.
///
/// # Errors
///
/// [`Error::Truncated`], [`Error::Checksum`] or [`Error::Malformed`] (a renamed object names
/// both its header's name and the expected one).
pub fn decode_piece(stored: &[u8], expected: &PieceName) -> Result<Piece> {
    let n = stored.len();
    if n > MAX_PIECE_SIZE {
        let msg = format!("{n} bytes, above the piece limit ({MAX_PIECE_SIZE} bytes)");
        return bad(WHAT, 0, msg);
    }
    if n >= PIECE_MAGIC.len() && &stored[..PIECE_MAGIC.len()] != PIECE_MAGIC {
        return bad(WHAT, 0, "not a WAL piece (bad magic)".into());
    }
    if n < BODY_AT + HASH_LEN {
        return truncated(WHAT, n);
    }
    let header_len = le32(stored, 8) as usize;
    if header_len == HEADER_LEN {
        let body_len = usize::try_from(le64(stored, 68)).unwrap_or(usize::MAX);
        match body_len.checked_add(BODY_AT + HASH_LEN) {
            Some(t) if t < n => return bad(WHAT, t, format!("{} bytes after its end", n - t)),
            Some(t) if t == n => {}
            _ => return truncated(WHAT, n),
        }
    }
    let split = n - HASH_LEN;
    let mut hash = [0u8; HASH_LEN];
    hash.copy_from_slice(&stored[split..]);
    let (recorded, computed) = (u128::from_le_bytes(hash), ContentHash::of(&stored[..split]));
    if recorded != computed.0 {
        return Err(Error::Checksum {
            what: WHAT,
            offset: 0,
            stored: ContentHash(recorded).to_hex(),
            computed: computed.to_hex(),
        });
    }
    let version = le32(stored, 12);
    if version > PIECE_VERSION {
        let detail = format!("piece version {version}, this build reads up to {PIECE_VERSION}");
        let msg = format!("written by a newer kyrodb_backup ({detail}); upgrade kyrodb_backup");
        return bad(WHAT, 12, msg);
    }
    if version != PIECE_VERSION || header_len != HEADER_LEN {
        let msg = format!("version {version} with a {header_len}-byte header");
        return bad(WHAT, 8, msg);
    }
    let Ok(level) = u8::try_from(le32(stored, 56)) else {
        return bad(WHAT, 56, format!("level {} is above 255", le32(stored, 56)));
    };
    let header = PieceName {
        first_seq: le64(stored, 16),
        last_seq: le64(stored, 24),
        first_ts: le64(stored, 32),
        last_ts: le64(stored, 40),
        observed_at: le64(stored, 48),
        level,
    };
    if header != *expected {
        let (h, e) = (header.file_name(), expected.file_name());
        let msg = format!("header says {h}, expected {e} (renamed or damaged)");
        return bad(WHAT, 12, msg);
    }
    let body = &stored[BODY_AT..split];
    let frames = walk(body, BODY_AT)?;
    check_covers(expected, &frames, BODY_AT)?;
    let last_crc = frames.last().map_or(0, |f| f.crc);
    if stored[..BODY_AT] != head(expected, frames.len(), body.len(), last_crc) {
        let msg = "header's frame count or last CRC is not its frames'".into();
        return bad(WHAT, 60, msg);
    }
    Ok(Piece {
        name: header,
        last_crc,
        frames,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{encode_entry, WalEntry, WalOp};

    fn frame(seq: u64, ts: u64, layout: WalLayout) -> Vec<u8> {
        let metadata = vec![("k".into(), format!("v{seq}"))];
        let (op, doc_id, embedding) = (WalOp::Insert, seq * 7, vec![0.25; 8]);
        let e = WalEntry {
            op,
            doc_id,
            embedding,
            metadata,
            seq_no: seq,
            timestamp: ts,
        };
        let body = encode_entry(&e, layout);
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(&body);
        f.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        f
    }

    fn frames(list: &[(u64, u64)]) -> Vec<u8> {
        list.iter()
            .flat_map(|&(s, t)| frame(s, t, WalLayout::W3))
            .collect()
    }

    fn name(first_seq: u64, last_seq: u64, first_ts: u64, last_ts: u64) -> PieceName {
        let (observed_at, level) = (1_795_529_800, 0);
        PieceName {
            first_seq,
            last_seq,
            first_ts,
            last_ts,
            observed_at,
            level,
        }
    }

    fn sample() -> (PieceName, Vec<u8>, Vec<u8>) {
        let raw = frames(&[
            (41, 1_795_529_701),
            (42, 1_795_529_700),
            (43, 1_795_529_703),
        ]);
        let n = name(41, 43, 1_795_529_700, 1_795_529_703);
        let enc = encode_piece(&n, &raw).unwrap();
        (n, raw, enc)
    }

    #[test]
    fn piece_round_trip() {
        let (n, raw, enc) = sample();
        assert!(enc.len() > 300 && &enc[..8] == b"KYROWAL1", "{}", enc.len());
        let piece = decode_piece(&enc, &n).unwrap();
        assert_eq!((piece.name, piece.body()), (n, raw.as_slice()));
        assert_eq!(piece.frames, piece_frames(&raw).unwrap());
        let seqs: Vec<u64> = piece.frames.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [41, 42, 43]);
        assert_eq!(piece.frames[1].timestamp, 1_795_529_700);
        assert_eq!(piece.last_crc, piece.frames[2].crc);
        let second = &raw[piece.frames[1].range.clone()];
        assert_eq!(second, frame(42, 1_795_529_700, WalLayout::W3));
        assert!(piece_frames(&[]).unwrap().is_empty());
    }

    #[test]
    fn every_damaged_byte_is_refused() {
        let (n, _, enc) = sample();
        for i in 0..enc.len() {
            for bit in [0x01, 0x80] {
                let mut bad = enc.clone();
                bad[i] ^= bit;
                assert!(decode_piece(&bad, &n).is_err(), "flip {bit:#x} at {i}");
            }
        }
        let longer = [enc.as_slice(), &[0]].concat();
        let err = decode_piece(&longer, &n).unwrap_err().to_string();
        assert!(err.contains("after its end"), "{err}");
    }

    #[test]
    fn every_truncation_is_refused() {
        let (n, _, enc) = sample();
        for len in 0..enc.len() {
            let err = decode_piece(&enc[..len], &n).unwrap_err();
            assert!(
                matches!(err, Error::Truncated { .. }),
                "length {len}: {err}"
            );
        }
    }

    #[test]
    fn piece_under_another_name_is_refused() {
        let (n, _, enc) = sample();
        for other in [
            PieceName { level: 1, ..n },
            PieceName {
                observed_at: 1,
                ..n
            },
            name(41, 42, 1_795_529_700, 1_795_529_703),
            name(41, 43, 1_795_529_700, 1_795_529_704),
        ] {
            let err = decode_piece(&enc, &other).unwrap_err().to_string();
            assert!(
                err.contains(&n.file_name()) && err.contains(&other.file_name()),
                "{err}"
            );
        }
    }

    #[test]
    fn encode_refuses_frames_that_are_not_what_the_name_says() {
        let n = name(1, 3, 10, 12);
        let ok = frames(&[(1, 10), (2, 11), (3, 12)]);
        assert!(encode_piece(&n, &ok).is_ok());
        let trailing = [ok.as_slice(), &[9, 0]].concat();
        let mut bad_crc = ok.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        let w2 = [frames(&[(1, 10), (2, 11)]), frame(3, 12, WalLayout::W2)].concat();
        let cases = [
            (n, frames(&[(1, 10), (2, 11), (4, 12)]), "follows"),
            (n, frames(&[(1, 10), (3, 11), (2, 12)]), "follows"),
            (n, frames(&[(0, 10), (1, 11), (2, 12)]), "sequence number 0"),
            (n, w2, "W2"),
            (n, frames(&[(1, 10), (2, 11), (3, 11)]), "timestamps"),
            (n, frames(&[(1, 9), (2, 11), (3, 12)]), "timestamps"),
            (n, frames(&[(1, 10), (2, 12)]), "sequence numbers"),
            (n, frames(&[(2, 10), (3, 12)]), "sequence numbers"),
            (n, Vec::new(), "no frames"),
            (n, trailing, "truncated"),
            (n, bad_crc, "checksum"),
            (name(0, 3, 10, 12), ok.clone(), "not a valid piece name"),
            (name(1, 3, 12, 10), ok.clone(), "not a valid piece name"),
            (name(1, 3, 10, 10_000_000_000), ok, "not a valid piece name"),
        ];
        for (i, (n, raw, want)) in cases.into_iter().enumerate() {
            let err = encode_piece(&n, &raw).unwrap_err().to_string();
            assert!(err.contains(want), "case {i}: {err}");
        }
    }

    #[test]
    fn newer_versions_and_lying_lengths_are_refused() {
        let (n, _, enc) = sample();
        let patched = |at: usize, bytes: &[u8]| {
            let mut b = enc.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            let split = b.len() - HASH_LEN;
            let h = ContentHash::of(&b[..split]).0.to_le_bytes();
            b[split..].copy_from_slice(&h);
            decode_piece(&b, &n).unwrap_err().to_string()
        };
        assert!(patched(12, &[2]).contains("newer kyrodb_backup"));
        assert!(patched(56, &[0, 1]).contains("above 255"));
        assert!(patched(60, &[4]).contains("frame count"));
        assert!(patched(76, &[0]).contains("last CRC"));
        // Claimed lengths beyond the buffer are refused before anything is allocated for them.
        for claim in [u64::MAX, MAX_PIECE_SIZE as u64, enc.len() as u64] {
            assert!(patched(68, &claim.to_le_bytes()).contains("truncated"));
        }
        assert!(patched(8, &u32::MAX.to_le_bytes()).contains("header"));
        let mut huge = vec![0u8; MAX_PIECE_SIZE + 1];
        huge[..8].copy_from_slice(PIECE_MAGIC);
        let err = decode_piece(&huge, &n).unwrap_err().to_string();
        assert!(err.contains("limit"), "{err}");
        let err = encode_piece(&n, &huge[..MAX_PIECE_SIZE - 64])
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit"), "{err}");
    }

    #[test]
    fn names_round_trip() {
        let n = PieceName {
            level: 3,
            ..name(41, 43, 1_795_529_700, 1_795_529_703)
        };
        let s =
            "00000000000000000041-00000000000000000043-1795529700-1795529703-1795529800-3.frames";
        assert_eq!((n.file_name().as_str(), PieceName::parse(s)), (s, Some(n)));
        let extreme =
            "18446744073709551615-18446744073709551615-0000000000-9999999999-0000000000-255.frames";
        let parsed = PieceName::parse(extreme).unwrap();
        assert_eq!(
            (parsed.first_seq, parsed.level, parsed.file_name()),
            (u64::MAX, 255, extreme.into())
        );
        let s = "00000000000000000040-1795529686-0b8f5e3e-2a6c-4d3e-9f7a-1c2b3d4e5f60.manifest";
        let b = BaseName::parse(s).unwrap();
        assert_eq!(
            (b.last_wal_seq, b.snapshot_ts, b.file_name()),
            (40, 1_795_529_686, s.into())
        );
        assert_eq!(b.id, "0b8f5e3e-2a6c-4d3e-9f7a-1c2b3d4e5f60");
        let tl = TimelineId::parse("1795529600-00c0ffee").unwrap();
        assert_eq!((tl.started_at, tl.tag), (1_795_529_600, 0x00c0_ffee));
        assert_eq!(tl.to_string(), "1795529600-00c0ffee");
    }

    #[test]
    fn malformed_names_are_refused() {
        let ok =
            "00000000000000000041-00000000000000000043-1795529700-1795529703-1795529800-3.frames";
        let swap = |from: &str, to: &str| ok.replacen(from, to, 1);
        for bad in [
            String::new(),
            ".frames".into(),
            swap(".frames", ""),
            swap(".frames", ".frame"),
            swap(".frames", ".frames/.."),
            swap("00041-", "0041-"),
            swap("00041-", "+0041-"),
            swap("-1795529700-", "-179552970-"),
            swap("-1795529800-", "-01795529800-"),
            swap("-3.", "-03."),
            swap("-3.", "-256."),
            swap("-3.", "-+3."),
            swap("-3.", "-."),
            swap("-3.", "-3-1."),
            swap("41-", "00-"),
            swap("41-", "44-"),
            swap("-1795529700-", "-1795529704-"),
            swap("00000000000000000043", "99999999999999999999"),
        ] {
            assert_eq!(PieceName::parse(&bad), None, "{bad}");
        }
        let ok = "00000000000000000040-1795529686-0b8f5e3e-2a6c-4d3e-9f7a-1c2b3d4e5f60.manifest";
        let swap = |from: &str, to: &str| ok.replacen(from, to, 1);
        for bad in [
            swap(".manifest", ""),
            swap("00040-", "0040-"),
            swap("-1795529686-", "-179552968-"),
            swap("0b8f5e3e", "0B8F5E3E"),
            swap("0b8f5e3e-2a6c-4d3e-9f7a-1c2b3d4e5f60", "../x"),
            swap("0b8f5e3e-2a6c-4d3e-9f7a-1c2b3d4e5f60", ""),
        ] {
            assert_eq!(BaseName::parse(&bad), None, "{bad}");
        }
        for bad in [
            "",
            "1795529600-00C0FFEE",
            "1795529600-0c0ffee",
            "1795529600-000c0ffee",
            "179552960-00c0ffee",
            "1795529600_00c0ffee",
            "1795529600-+0c0ffee",
            "1795529600-00c0ffee-",
        ] {
            assert_eq!(TimelineId::parse(bad), None, "{bad}");
        }
    }
}
