//! Sealed objects: the layout, its lengths, and the [`Sealer`] that writes and opens them. The
//! format is described byte by byte in the crate doc.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::keys::fill_random;
use crate::{Error, Result};

/// The plaintext bytes of one segment (the last one of an object may be shorter).
pub const SEGMENT: usize = 64 * 1024;

/// The bytes of a sealed object's header.
pub const HEADER_LEN: usize = 44;

/// The first bytes of every sealed object.
const MAGIC: &[u8; 8] = b"KYROSEAL";
/// The sealing version this crate writes and reads.
const VERSION: u8 = 1;
/// The algorithm byte of AES-256-GCM.
const AES_256_GCM_ID: u8 = 1;
/// Where the salt starts in the header.
const SALT_AT: usize = 12;
/// The bytes of an AES-GCM tag.
const TAG_LEN: usize = 16;

const SEGMENT_U64: u64 = SEGMENT as u64;
const HEADER_U64: u64 = HEADER_LEN as u64;
const TAG_U64: u64 = TAG_LEN as u64;
/// The sealed bytes of a full segment.
const SEALED_SEGMENT: u64 = SEGMENT_U64 + TAG_U64;

/// The segments of a plaintext of `plain_len` bytes: at least one (an empty plaintext is one
/// empty segment).
fn segments(plain_len: u64) -> u64 {
    plain_len.div_ceil(SEGMENT_U64).max(1)
}

/// The length of the sealed object of a plaintext of `plain_len` bytes:
/// `44 + plain_len + 16 * max(1, ceil(plain_len / SEGMENT))`.
///
/// It saturates at `u64::MAX` for lengths no object can have, so a caller may pass
/// `u64::MAX` for "no limit".
pub fn sealed_len(plain_len: u64) -> u64 {
    HEADER_U64
        .saturating_add(plain_len)
        .saturating_add(segments(plain_len).saturating_mul(TAG_U64))
}

/// The length of the plaintext sealed in an object of `sealed_len` bytes, or `None` when no
/// plaintext length seals to it (such an object is damaged).
///
/// The inverse of [`sealed_len`]: `plain_len(sealed_len(n)) == Some(n)` for every `n` below the
/// saturation.
pub fn plain_len(sealed_len: u64) -> Option<u64> {
    let body = sealed_len.checked_sub(HEADER_U64)?;
    let full = body / SEALED_SEGMENT;
    let rest = body % SEALED_SEGMENT;
    match rest {
        // Only full segments: the last one is full too.
        0 if full > 0 => Some(full * SEGMENT_U64),
        // One empty segment: the empty plaintext (an empty segment is never after others).
        TAG_U64 if full == 0 => Some(0),
        // Full segments, then a shorter, non-empty last one.
        rest if rest > TAG_U64 => Some(full * SEGMENT_U64 + rest - TAG_U64),
        _ => None,
    }
}

/// The sealed bytes [`Sealer::open_head`] needs to open the first `want` plaintext bytes: the
/// header and every segment that holds one of them, and always at least the first segment (so
/// that even `want == 0` authenticates the header and the object key).
///
/// It does not know the object's length: the prefix to give `open_head` is the object's first
/// `min(head_len(want), sealed_len)` bytes. It saturates at `u64::MAX`.
pub fn head_len(want: u64) -> u64 {
    HEADER_U64.saturating_add(segments(want).saturating_mul(SEALED_SEGMENT))
}

/// Whether `bytes` starts as a sealed object does (with its magic, `KYROSEAL`). It says nothing
/// of whether the rest is intact.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

fn damaged(detail: impl Into<String>) -> Error {
    Error::Damaged(detail.into())
}

/// The nonce of segment `index`: the index as a big-endian `u64`, then a big-endian `u32` that is
/// 1 for the object's last segment and 0 for the others.
fn nonce(index: u64, last: bool) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&index.to_be_bytes());
    bytes[8..].copy_from_slice(&u32::from(last).to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// The associated data of every segment: the header, then the object key's UTF-8 bytes.
fn aad(header: &[u8; HEADER_LEN], object_key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + object_key.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(object_key.as_bytes());
    aad
}

/// The header at the start of `bytes`, checked for magic, version, algorithm and reserved bytes.
fn read_header(bytes: &[u8]) -> Result<[u8; HEADER_LEN]> {
    if bytes.len() < HEADER_LEN || !is_sealed(bytes) {
        return Err(damaged("not a sealed object"));
    }
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&bytes[..HEADER_LEN]);
    if header[8] != VERSION {
        return Err(damaged(format!(
            "unsupported sealing version {}",
            header[8]
        )));
    }
    if header[9] != AES_256_GCM_ID {
        return Err(damaged(format!(
            "unsupported sealing algorithm {}",
            header[9]
        )));
    }
    if header[10..SALT_AT] != [0, 0] {
        return Err(damaged("the reserved bytes of its header are not zero"));
    }
    Ok(header)
}

/// Seals and opens the objects of one repository (see the crate doc for the format).
///
/// It holds the repository's 32-byte data key, wiped from memory when dropped; each object is
/// sealed under its own key, derived from the data key and the object's random salt. Its
/// [`Debug`] form shows no key.
#[derive(Clone)]
pub struct Sealer {
    data_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    pub(crate) fn new(data_key: Zeroizing<[u8; 32]>) -> Self {
        Self { data_key }
    }

    #[cfg(test)]
    pub(crate) fn data_key(&self) -> &[u8; 32] {
        &self.data_key
    }

    /// The AES-256-GCM key of the object whose header is `header`: the blake3 keyed hash of its
    /// salt under the data key.
    fn object_cipher(&self, header: &[u8; HEADER_LEN]) -> Result<LessSafeKey> {
        let key =
            Zeroizing::new(*blake3::keyed_hash(&self.data_key, &header[SALT_AT..]).as_bytes());
        let unbound = UnboundKey::new(&AES_256_GCM, &key[..])
            .map_err(|_| damaged("the cipher refused an object key"))?;
        Ok(LessSafeKey::new(unbound))
    }

    /// `plain` sealed as the object named `object_key`, under a fresh random salt.
    ///
    /// # Errors
    ///
    /// [`Error::Random`] when the operating system's random source fails.
    pub fn seal(&self, object_key: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let mut salt = [0u8; HEADER_LEN - SALT_AT];
        fill_random(&mut salt, "an object's salt")?;
        self.seal_with_salt(object_key, plain, &salt)
    }

    /// [`Sealer::seal`] with a given salt (tests pin the format with it).
    pub(crate) fn seal_with_salt(
        &self,
        object_key: &str,
        plain: &[u8],
        salt: &[u8; HEADER_LEN - SALT_AT],
    ) -> Result<Vec<u8>> {
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8] = VERSION;
        header[9] = AES_256_GCM_ID;
        header[SALT_AT..].copy_from_slice(salt);
        let cipher = self.object_cipher(&header)?;
        let aad = aad(&header, object_key);

        let count = segments(plain.len() as u64);
        let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
        out.extend_from_slice(&header);
        for index in 0..count {
            let start = index as usize * SEGMENT;
            let end = plain.len().min(start + SEGMENT);
            let at = out.len();
            out.extend_from_slice(&plain[start..end]);
            let tag = cipher
                .seal_in_place_separate_tag(
                    nonce(index, index + 1 == count),
                    Aad::from(&aad[..]),
                    &mut out[at..],
                )
                .map_err(|_| damaged(format!("the cipher refused segment {index}")))?;
            out.extend_from_slice(tag.as_ref());
        }
        debug_assert_eq!(out.len() as u64, sealed_len(plain.len() as u64));
        Ok(out)
    }

    /// The plaintext of the sealed object `sealed`, stored as `object_key`, once every segment
    /// authenticates.
    ///
    /// # Errors
    ///
    /// [`Error::Damaged`] when it is not a sealed object, was sealed by a version of this crate
    /// it does not know, has a length no sealed object has, or a segment does not authenticate:
    /// it was changed, truncated, extended, reordered, sealed by another key or stored under
    /// another object key.
    pub fn open(&self, object_key: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let header = read_header(sealed)?;
        let plain = plain_len(sealed.len() as u64)
            .ok_or_else(|| damaged("its length fits no sealed object"))?;
        self.open_segments(object_key, &header, &sealed[HEADER_LEN..], plain, plain)
    }

    /// Opens only the first `want` plaintext bytes (fewer if the object is shorter) from a prefix
    /// of the sealed object, given the object's whole sealed length.
    ///
    /// `sealed_prefix` must hold at least the object's first `min(head_len(want), sealed_len)`
    /// bytes (see [`head_len`]); more are ignored. Only the segments holding the bytes wanted are
    /// authenticated, and at least the first one, so even `want == 0` checks the header, the key
    /// and the object key. Which segment is the object's last follows from `sealed_len`, so a
    /// wrong `sealed_len` fails whenever a segment opened is, or is taken for, the last one.
    ///
    /// # Errors
    ///
    /// As [`Sealer::open`], and [`Error::Damaged`] when the prefix is shorter than needed or
    /// longer than `sealed_len`.
    pub fn open_head(
        &self,
        object_key: &str,
        sealed_prefix: &[u8],
        sealed_len: u64,
        want: u64,
    ) -> Result<Vec<u8>> {
        let header = read_header(sealed_prefix)?;
        let plain =
            plain_len(sealed_len).ok_or_else(|| damaged("its length fits no sealed object"))?;
        let have = sealed_prefix.len() as u64;
        if have > sealed_len {
            return Err(damaged(format!(
                "{have} bytes were read of an object of {sealed_len}"
            )));
        }
        let need = head_len(want).min(sealed_len);
        if have < need {
            return Err(damaged(format!(
                "only {have} of the {need} bytes needed to open its head were read"
            )));
        }
        self.open_segments(
            object_key,
            &header,
            &sealed_prefix[HEADER_LEN..],
            plain,
            want,
        )
    }

    /// Opens the segments of an object of `plain_total` plaintext bytes that hold its first
    /// `want` bytes (at least the first segment). `body` is the object after its header, and
    /// holds at least those segments.
    /// [`Sealer::open`] of a sealed object the caller gives up: decrypted where it lies, each
    /// segment's plaintext moved down over the header and the tags before it, so no second
    /// buffer of the object's size is needed.
    ///
    /// # Errors
    ///
    /// As [`Sealer::open`].
    pub fn open_owned(&self, object_key: &str, mut sealed: Vec<u8>) -> Result<Vec<u8>> {
        let header = read_header(&sealed)?;
        let plain_total = plain_len(sealed.len() as u64)
            .ok_or_else(|| damaged("its length fits no sealed object"))?;
        let total = segments(plain_total);
        let cipher = self.object_cipher(&header)?;
        let aad = aad(&header, object_key);
        for index in 0..total {
            let seg_plain = (plain_total - index * SEGMENT_U64).min(SEGMENT_U64) as usize;
            let dst = (index * SEGMENT_U64) as usize;
            let src = HEADER_LEN + (index * SEALED_SEGMENT) as usize;
            cipher
                .open_within(
                    nonce(index, index + 1 == total),
                    Aad::from(&aad[..]),
                    &mut sealed[dst..src + seg_plain + TAG_LEN],
                    src - dst..,
                )
                .map_err(|_| {
                    damaged(format!(
                        "segment {index} does not authenticate \
                         (changed, truncated, or moved from another object)"
                    ))
                })?;
        }
        sealed.truncate(plain_total as usize);
        Ok(sealed)
    }

    fn open_segments(
        &self,
        object_key: &str,
        header: &[u8; HEADER_LEN],
        body: &[u8],
        plain_total: u64,
        want: u64,
    ) -> Result<Vec<u8>> {
        let want = want.min(plain_total);
        let total = segments(plain_total);
        let count = segments(want);
        let cipher = self.object_cipher(header)?;
        let aad = aad(header, object_key);

        let mut out = Vec::with_capacity(want as usize);
        for index in 0..count {
            let seg_plain = (plain_total - index * SEGMENT_U64).min(SEGMENT_U64) as usize;
            let at = (index * SEALED_SEGMENT) as usize;
            let sealed = &body[at..at + seg_plain + TAG_LEN];
            let start = out.len();
            out.extend_from_slice(sealed);
            cipher
                .open_in_place(
                    nonce(index, index + 1 == total),
                    Aad::from(&aad[..]),
                    &mut out[start..],
                )
                .map_err(|_| {
                    damaged(format!(
                        "segment {index} does not authenticate \
                         (changed, truncated, or moved from another object)"
                    ))
                })?;
            out.truncate(start + seg_plain);
        }
        out.truncate(want as usize);
        Ok(out)
    }
}

#[cfg(test)]
mod open_owned_tests {
    use super::{sealed_len, Sealer, SEGMENT};
    use crate::MasterKey;

    #[test]
    fn opening_in_place_gives_what_open_gives_and_refuses_what_it_refuses() {
        let master = MasterKey::generate().unwrap();
        let keys = master.keys();
        let object_sealer: &Sealer = keys.sealer();
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let boxed = object_sealer.seal("chains/x/chunks/ab/cd", &plain).unwrap();
            assert_eq!(boxed.len() as u64, sealed_len(len as u64));
            assert_eq!(
                object_sealer
                    .open_owned("chains/x/chunks/ab/cd", boxed.clone())
                    .unwrap(),
                plain
            );
            assert!(object_sealer
                .open_owned("chains/x/chunks/ab/ce", boxed.clone())
                .is_err());
            for at in [0, 8, 12, 44, boxed.len() / 2, boxed.len() - 1] {
                let mut bad = boxed.clone();
                bad[at] ^= 1;
                assert!(
                    object_sealer
                        .open_owned("chains/x/chunks/ab/cd", bad)
                        .is_err(),
                    "{len} {at}"
                );
            }
            let mut short = boxed.clone();
            short.pop();
            assert!(object_sealer
                .open_owned("chains/x/chunks/ab/cd", short)
                .is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        head_len, is_sealed, plain_len, sealed_len, Sealer, HEADER_LEN, SEALED_SEGMENT, SEGMENT,
    };
    use crate::{Error, MasterKey};

    const KEY: &str = "chunks/ab/abcdef";

    fn sealer(byte: u8) -> Sealer {
        MasterKey::from_bytes([byte; 64]).keys().sealer().clone()
    }

    /// Bytes that differ from position to position and from segment to segment.
    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
            .collect()
    }

    fn damaged_detail(result: crate::Result<Vec<u8>>) -> String {
        match result {
            Err(Error::Damaged(detail)) => detail,
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    #[test]
    fn round_trips_at_every_boundary() {
        let s = sealer(1);
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            2 * SEGMENT,
            3 * SEGMENT + 5,
        ] {
            let plain = data(len);
            let sealed = s.seal(KEY, &plain).unwrap();
            assert_eq!(sealed.len() as u64, sealed_len(len as u64), "length {len}");
            assert!(is_sealed(&sealed));
            assert_eq!(s.open(KEY, &sealed).unwrap(), plain, "length {len}");
            assert_eq!(
                s.open_head(KEY, &sealed, sealed.len() as u64, u64::MAX)
                    .unwrap(),
                plain
            );
        }
    }

    #[test]
    fn lengths_are_inverse() {
        assert_eq!(sealed_len(0), 60);
        assert_eq!(sealed_len(1), 61);
        assert_eq!(sealed_len(SEGMENT as u64), 44 + SEGMENT as u64 + 16);
        assert_eq!(sealed_len(SEGMENT as u64 + 1), 44 + SEGMENT as u64 + 1 + 32);
        // Every plaintext length up to 200 000 (more than three segments).
        for n in 0..=200_000u64 {
            assert_eq!(plain_len(sealed_len(n)), Some(n), "plaintext length {n}");
            assert!(sealed_len(n + 1) > sealed_len(n));
        }
        // Every sealed length up to there: either the sealed length of its plaintext or none.
        let mut some = 0;
        for s in 0..=sealed_len(200_000) {
            if let Some(n) = plain_len(s) {
                assert_eq!(sealed_len(n), s, "sealed length {s}");
                some += 1;
            }
        }
        assert_eq!(some, 200_001);
        for s in 0..60 {
            assert_eq!(plain_len(s), None, "sealed length {s}");
        }
        // After a full segment, an empty or tag-only rest seals nothing.
        let one = 44 + SEALED_SEGMENT;
        for rest in 1..=16 {
            assert_eq!(plain_len(one + rest), None, "rest {rest}");
        }
        assert_eq!(plain_len(one + 17), Some(SEGMENT as u64 + 1));
        // Saturating at the top.
        assert_eq!(sealed_len(u64::MAX), u64::MAX);
        assert_eq!(head_len(u64::MAX), u64::MAX);
        if let Some(n) = plain_len(u64::MAX) {
            assert_eq!(sealed_len(n), u64::MAX);
        }
    }

    #[test]
    fn head_len_covers_the_segments_wanted() {
        let full = SEALED_SEGMENT;
        assert_eq!(head_len(0), 44 + full);
        assert_eq!(head_len(1), 44 + full);
        assert_eq!(head_len(SEGMENT as u64), 44 + full);
        assert_eq!(head_len(SEGMENT as u64 + 1), 44 + 2 * full);
        // Never less than what the wanted bytes need in a longer object.
        for want in [1, 100, SEGMENT as u64 - 1, 3 * SEGMENT as u64 + 5] {
            assert!(head_len(want) >= sealed_len(want));
        }
    }

    #[test]
    fn every_changed_byte_fails() {
        let s = sealer(1);
        let mut sealed = s.seal(KEY, &data(SEGMENT + 100)).unwrap();
        for i in 0..sealed.len() {
            sealed[i] ^= 0x01;
            let result = s.open(KEY, &sealed);
            assert!(
                matches!(result, Err(Error::Damaged(_))),
                "flipped byte {i} opened"
            );
            sealed[i] ^= 0x01;
        }
        assert!(s.open(KEY, &sealed).is_ok());
    }

    #[test]
    fn the_details_say_what_is_wrong() {
        let s = sealer(1);
        let sealed = s.seal(KEY, &data(SEGMENT + 100)).unwrap();
        assert_eq!(
            damaged_detail(s.open(KEY, b"plain text")),
            "not a sealed object"
        );
        assert_eq!(
            damaged_detail(s.open(KEY, &sealed[..20])),
            "not a sealed object"
        );
        assert_eq!(damaged_detail(s.open(KEY, &[])), "not a sealed object");

        let mut other = sealed.clone();
        other[8] = 2;
        assert_eq!(
            damaged_detail(s.open(KEY, &other)),
            "unsupported sealing version 2"
        );
        let mut other = sealed.clone();
        other[9] = 7;
        assert_eq!(
            damaged_detail(s.open(KEY, &other)),
            "unsupported sealing algorithm 7"
        );
        let mut other = sealed.clone();
        other[11] = 1;
        assert!(damaged_detail(s.open(KEY, &other)).contains("reserved"));

        assert_eq!(
            damaged_detail(s.open(KEY, &sealed[..HEADER_LEN + 10])),
            "its length fits no sealed object"
        );
        let mut other = sealed.clone();
        *other.last_mut().unwrap() ^= 0x80;
        assert_eq!(
            damaged_detail(s.open(KEY, &other)),
            "segment 1 does not authenticate (changed, truncated, or moved from another object)"
        );
        assert!(damaged_detail(s.open("another/key", &sealed)).starts_with("segment 0 "));
    }

    #[test]
    fn every_truncation_fails() {
        let s = sealer(1);
        let sealed = s.seal(KEY, &data(SEGMENT + 100)).unwrap();
        for len in 0..sealed.len() {
            assert!(
                matches!(s.open(KEY, &sealed[..len]), Err(Error::Damaged(_))),
                "truncated to {len} opened"
            );
        }
        // In particular at the segment boundary, where the rest is a whole object's length.
        let boundary = HEADER_LEN + SEGMENT + 16;
        assert_eq!(plain_len(boundary as u64), Some(SEGMENT as u64));
        assert!(s.open(KEY, &sealed[..boundary]).is_err());
    }

    #[test]
    fn appending_fails() {
        let s = sealer(1);
        for len in [0, 5, SEGMENT, SEGMENT + 100] {
            let sealed = s.seal(KEY, &data(len)).unwrap();
            for extra in [&[0u8][..], &[0; 16], &sealed[HEADER_LEN..]] {
                let mut longer = sealed.clone();
                longer.extend_from_slice(extra);
                assert!(
                    matches!(s.open(KEY, &longer), Err(Error::Damaged(_))),
                    "{len} bytes with {} appended opened",
                    extra.len()
                );
            }
        }
    }

    #[test]
    fn swapping_segments_fails() {
        let s = sealer(1);
        let sealed = s.seal(KEY, &data(2 * SEGMENT)).unwrap();
        let seg = SEGMENT + 16;
        let (first, second) = sealed[HEADER_LEN..].split_at(seg);
        assert_eq!(second.len(), seg);
        let mut swapped = sealed[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(second);
        swapped.extend_from_slice(first);
        assert!(matches!(s.open(KEY, &swapped), Err(Error::Damaged(_))));
        // Also a segment repeated in place of the other.
        let mut doubled = sealed[..HEADER_LEN].to_vec();
        doubled.extend_from_slice(first);
        doubled.extend_from_slice(first);
        assert!(matches!(s.open(KEY, &doubled), Err(Error::Damaged(_))));
    }

    #[test]
    fn a_segment_from_another_object_fails() {
        let s = sealer(1);
        let plain = data(2 * SEGMENT);
        let a = s.seal(KEY, &plain).unwrap();
        let b = s.seal(KEY, &plain).unwrap();
        let mut mixed = a[..HEADER_LEN + SEGMENT + 16].to_vec();
        mixed.extend_from_slice(&b[HEADER_LEN + SEGMENT + 16..]);
        assert!(matches!(s.open(KEY, &mixed), Err(Error::Damaged(_))));
    }

    #[test]
    fn another_object_key_or_master_fails() {
        let s = sealer(1);
        let plain = data(1000);
        let sealed = s.seal(KEY, &plain).unwrap();
        for other in [
            "chunks/ab/abcdeg",
            "",
            "chunks/ab/abcdef ",
            "CHUNKS/ab/abcdef",
        ] {
            assert!(matches!(s.open(other, &sealed), Err(Error::Damaged(_))));
        }
        assert!(matches!(
            sealer(2).open(KEY, &sealed),
            Err(Error::Damaged(_))
        ));
        let fresh = MasterKey::generate().unwrap().keys();
        assert!(matches!(
            fresh.sealer().open(KEY, &sealed),
            Err(Error::Damaged(_))
        ));
        assert_eq!(s.open(KEY, &sealed).unwrap(), plain);
    }

    #[test]
    fn each_seal_is_fresh() {
        let s = sealer(1);
        let a = s.seal(KEY, b"same").unwrap();
        let b = s.seal(KEY, b"same").unwrap();
        assert_ne!(a, b);
        assert_ne!(a[12..44], b[12..44], "the salts differ");
        assert_ne!(a[44..], b[44..]);
        assert_eq!(s.open(KEY, &a).unwrap(), s.open(KEY, &b).unwrap());
    }

    #[test]
    fn the_layout_is_as_documented() {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

        let s = sealer(1);
        let salt = [9u8; 32];
        let plain = data(SEGMENT + 3);
        let sealed = s.seal_with_salt(KEY, &plain, &salt).unwrap();
        assert_eq!(&sealed[..8], b"KYROSEAL");
        assert_eq!(sealed[8..12], [1, 1, 0, 0]);
        assert_eq!(sealed[12..44], salt);

        // Open it by the crate doc's recipe alone.
        let object_key = blake3::keyed_hash(s.data_key(), &salt);
        let cipher =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, object_key.as_bytes()).unwrap());
        let mut aad = sealed[..44].to_vec();
        aad.extend_from_slice(KEY.as_bytes());
        let mut first = sealed[44..44 + SEGMENT + 16].to_vec();
        let mut nonce = [0u8; 12];
        let opened = cipher
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                &mut first,
            )
            .unwrap();
        assert_eq!(opened, &plain[..SEGMENT]);
        let mut second = sealed[44 + SEGMENT + 16..].to_vec();
        assert_eq!(second.len(), 3 + 16);
        nonce[7] = 1; // segment 1
        nonce[11] = 1; // the last
        let opened = cipher
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                &mut second,
            )
            .unwrap();
        assert_eq!(opened, &plain[SEGMENT..]);

        // And pinned: a change here means existing repositories can no longer be read.
        let sealed = s.seal_with_salt(KEY, b"hi", &salt).unwrap();
        assert_eq!(crate::hex::encode(&sealed), PINNED_SEALED_HI);
    }

    const PINNED_SEALED_HI: &str = concat!(
        "4b59524f5345414c01010000",
        "0909090909090909090909090909090909090909090909090909090909090909",
        "a8a3",
        "88c96ddc32871c59097580e93832545c",
    );

    #[test]
    fn open_head_opens_only_the_prefix_it_needs() {
        let s = sealer(1);
        let whole = 3 * SEGMENT + 5;
        let plain = data(whole);
        let sealed = s.seal(KEY, &plain).unwrap();
        let total = sealed.len() as u64;
        for want in [
            0,
            1,
            SEGMENT as u64,
            SEGMENT as u64 + 1,
            whole as u64,
            whole as u64 + 1,
            u64::MAX,
        ] {
            let need = head_len(want).min(total) as usize;
            let head = s.open_head(KEY, &sealed[..need], total, want).unwrap();
            let expect = want.min(whole as u64) as usize;
            assert_eq!(head, plain[..expect], "want {want}");
            // More than needed is fine; less is not.
            assert_eq!(s.open_head(KEY, &sealed, total, want).unwrap(), head);
            assert!(matches!(
                s.open_head(KEY, &sealed[..need - 1], total, want),
                Err(Error::Damaged(_))
            ));
            // Another object key, another master.
            assert!(s
                .open_head("another", &sealed[..need], total, want)
                .is_err());
            assert!(sealer(2)
                .open_head(KEY, &sealed[..need], total, want)
                .is_err());
            // A changed byte anywhere in the prefix (sampled; every byte for want 1 below).
            let mut prefix = sealed[..need].to_vec();
            for i in (0..need)
                .step_by(997)
                .chain([need - 1, HEADER_LEN - 1, HEADER_LEN])
            {
                prefix[i] ^= 0x40;
                assert!(
                    matches!(
                        s.open_head(KEY, &prefix, total, want),
                        Err(Error::Damaged(_))
                    ),
                    "want {want}, changed byte {i} opened"
                );
                prefix[i] ^= 0x40;
            }
        }
    }

    #[test]
    fn open_head_fails_on_every_changed_byte_of_its_prefix() {
        let s = sealer(1);
        let sealed = s.seal(KEY, &data(2 * SEGMENT + 7)).unwrap();
        let total = sealed.len() as u64;
        let mut prefix = sealed[..head_len(1) as usize].to_vec();
        assert_eq!(s.open_head(KEY, &prefix, total, 1).unwrap(), data(1));
        for i in 0..prefix.len() {
            prefix[i] ^= 0x01;
            assert!(
                matches!(s.open_head(KEY, &prefix, total, 1), Err(Error::Damaged(_))),
                "changed byte {i} opened"
            );
            prefix[i] ^= 0x01;
        }
    }

    #[test]
    fn open_head_checks_the_last_flag_and_the_length() {
        let s = sealer(1);
        // A one-segment object opened as if it were longer: its only segment is its last.
        let small = s.seal(KEY, &data(100)).unwrap();
        let wrong_total = sealed_len(SEGMENT as u64 + 100);
        assert!(s.open_head(KEY, &small, wrong_total, 10).is_err());
        // The right length opens it, whatever is wanted.
        assert_eq!(
            s.open_head(KEY, &small, small.len() as u64, 10).unwrap(),
            data(10)
        );
        // A length no object has.
        assert_eq!(
            damaged_detail(s.open_head(KEY, &small, 50, 10)),
            "its length fits no sealed object"
        );
        // A prefix longer than the object is said to be.
        assert!(s
            .open_head(KEY, &small, small.len() as u64 - 1, 10)
            .is_err());
        // A full object, truncated at the boundary: the first segment is not the last.
        let two = s.seal(KEY, &data(SEGMENT + 100)).unwrap();
        let boundary = HEADER_LEN + SEGMENT + 16;
        assert!(s
            .open_head(KEY, &two[..boundary], boundary as u64, 10)
            .is_err());
        assert_eq!(
            s.open_head(KEY, &two[..boundary], two.len() as u64, 10)
                .unwrap(),
            data(10)
        );
    }
}
