//! Content-defined chunking keyed by a gear table.
//!
//! [`GearChunker`] cuts a stream where a rolling gear hash matches a mask, with the ideas of
//! the FastCDC paper: a gear hash (`h = (h << 1) + gear[byte]`, so a byte leaves the hash 64
//! bytes after it entered), no cut before the minimum size, and normalized chunking (a mask
//! with more bits, so cuts are rarer, before the average size and one with fewer bits after
//! it). The gear table is the caller's: in an encrypted repository it is derived from a
//! repository secret, so the sizes of the stored chunks, which anyone who sees the bucket
//! sees, do not tell whether a known file is in it (restic issue #5291).

use std::io::{self, Read};
use std::sync::Arc;

/// How many bytes a gear hash depends on: each byte is shifted out of the 64-bit word after
/// 64 more.
const WINDOW: usize = 64;

/// The first allocation of the read buffer; it doubles up to `2 * max` when a stream is
/// longer, so a small file does not cost a buffer of the largest chunk's size.
const FIRST_BUFFER: usize = 64 * 1024;

/// Splits a stream into content-defined chunks. Boundaries depend only on the bytes and the
/// gear table.
///
/// A chunk is at least `min` bytes (except the stream's last, which may be shorter) and at
/// most `max`. Whether a chunk ends after a byte depends only on the 64 bytes up to it and on
/// how far the chunk has come, so an insertion or deletion moves the cuts near it and leaves
/// later ones where they were. The chunker holds at most `2 * max` bytes of the stream and
/// reads in blocks of up to that size.
///
/// Each item is one chunk, in order. A read error (other than
/// [`io::ErrorKind::Interrupted`], which is retried) is yielded once, after the chunks whose
/// ends the bytes read before it already fixed; the iterator then ends.
pub(crate) struct GearChunker<R: Read> {
    reader: R,
    cuts: Cuts,
    /// `buf[start..end]` is read and not yet returned; `buf.len()` is what is allocated.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The reader said it has no more bytes.
    eof: bool,
    /// A read failed; yielded once the chunks before it are out.
    error: Option<io::Error>,
    /// Nothing more to yield.
    done: bool,
}

impl<R: Read> GearChunker<R> {
    /// A chunker of `reader` cutting with `gear`, aiming at chunks of `avg` bytes (rounded
    /// down to a power of two for the masks), none shorter than `min` but the last and none
    /// longer than `max`.
    ///
    /// Panics unless `1 <= min <= avg <= max` and `avg >= 4`.
    pub(crate) fn new(reader: R, gear: Arc<[u64; 256]>, min: u32, avg: u32, max: u32) -> Self {
        assert!(
            1 <= min && min <= avg && avg <= max && avg >= 4,
            "chunk sizes must satisfy 1 <= min <= avg <= max and avg >= 4 \
             (min {min}, avg {avg}, max {max})"
        );
        let bits = avg.ilog2();
        Self {
            reader,
            cuts: Cuts {
                gear,
                min: min as usize,
                avg: avg as usize,
                max: max as usize,
                mask_s: high_bits(bits + 1),
                mask_l: high_bits(bits - 1),
                scanned: None,
            },
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            error: None,
            done: false,
        }
    }

    /// Moves the unreturned bytes to the front of the buffer and reads until it holds
    /// `2 * max` bytes, the stream ends or a read fails.
    fn fill(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let capacity = 2 * self.cuts.max;
        while self.end < capacity {
            if self.end == self.buf.len() {
                let len = (2 * self.buf.len()).max(FIRST_BUFFER).min(capacity);
                self.buf.resize(len, 0);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.buf = Vec::new();
        self.start = 0;
        self.end = 0;
    }
}

impl<R: Read> Iterator for GearChunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let data = &self.buf[self.start..self.end];
            if let Some(len) = self.cuts.next_cut(data) {
                let chunk = data[..len].to_vec();
                self.start += len;
                return Some(Ok(chunk));
            }
            // The bytes held do not decide where this chunk ends (there are fewer than max):
            // read more, unless the stream ended or failed.
            if !self.eof && self.error.is_none() {
                self.fill();
                continue;
            }
            let last = (!data.is_empty()).then(|| data.to_vec());
            let error = self.error.take();
            self.finish();
            return match error {
                Some(e) => Some(Err(e)),
                None => last.map(Ok),
            };
        }
        None
    }
}

/// Where the chunks of a stream end: the sizes, masks and gear table, and how far the
/// current chunk has been looked at.
struct Cuts {
    gear: Arc<[u64; 256]>,
    min: usize,
    avg: usize,
    max: usize,
    /// Cut before `avg` when `h & mask_s == 0` (more bits: rarer).
    mask_s: u64,
    /// Cut from `avg` on when `h & mask_l == 0` (fewer bits: likelier).
    mask_l: u64,
    /// Of the current chunk, the index of the next byte to roll into the hash, and the hash
    /// of the bytes before it: where the last look ended without a cut, so the next look
    /// (with more bytes) goes on from there instead of hashing them again.
    scanned: Option<(usize, u64)>,
}

impl Cuts {
    /// The length of the chunk at the start of `data` if the bytes of `data` decide it: where
    /// the hash first matches, or `max`. `None` when `data` is shorter than `max` and has no
    /// content-defined cut (the chunk goes on past it, or ends with the stream). After
    /// `None`, the next call must be given the same chunk (more of it or as much).
    fn next_cut(&mut self, data: &[u8]) -> Option<usize> {
        let n = data.len();
        if n < self.min {
            return None;
        }
        let gear = &*self.gear;
        // A chunk of length `len` may end when the hash of the bytes up to `data[len - 1]`
        // matches. Only the last 64 bytes count, so hashing starts 63 bytes before the first
        // byte tested rather than at the chunk's start.
        let (mut pos, mut h) = self.scanned.take().unwrap_or_else(|| {
            let first = self.min - 1;
            let warm = &data[self.min.saturating_sub(WINDOW)..first];
            (first, warm.iter().fold(0, |h, &b| roll(h, gear, b)))
        });
        let small_end = (self.avg - 1).min(n);
        if pos < small_end {
            if let Some(i) = scan(gear, &data[pos..small_end], &mut h, self.mask_s) {
                return Some(pos + i + 1);
            }
            pos = small_end;
        }
        let large_end = (self.max - 1).min(n);
        if pos < large_end {
            if let Some(i) = scan(gear, &data[pos..large_end], &mut h, self.mask_l) {
                return Some(pos + i + 1);
            }
            pos = large_end;
        }
        if n >= self.max {
            return Some(self.max);
        }
        self.scanned = Some((pos, h));
        None
    }
}

/// A mask of the `count` highest bits of a word: the high bits of a gear hash depend on the
/// most bytes (bit `k` on the last `k + 1`).
fn high_bits(count: u32) -> u64 {
    debug_assert!((1..64).contains(&count));
    !0 << (64 - count)
}

#[inline]
fn roll(h: u64, gear: &[u64; 256], byte: u8) -> u64 {
    (h << 1).wrapping_add(gear[usize::from(byte)])
}

/// Rolls `bytes` into `h` and returns the index of the first byte after which
/// `h & mask == 0`.
///
/// Rolling one byte is a shift and an add on the hash, two dependent steps. Four bytes at a
/// time, their gear values are first combined among themselves (`g1` to `g4`: the hash of
/// the first one to four of them alone, off the hash's dependency chain), and each of the
/// four hashes is then one shift and one add away from the hash before the block.
#[inline]
fn scan(gear: &[u64; 256], bytes: &[u8], h: &mut u64, mask: u64) -> Option<usize> {
    let mut hash = *h;
    let mut blocks = bytes.chunks_exact(4);
    for (k, block) in blocks.by_ref().enumerate() {
        let g1 = gear[usize::from(block[0])];
        let g2 = (g1 << 1).wrapping_add(gear[usize::from(block[1])]);
        let g3 = (g2 << 1).wrapping_add(gear[usize::from(block[2])]);
        let g4 = (g3 << 1).wrapping_add(gear[usize::from(block[3])]);
        if (hash << 1).wrapping_add(g1) & mask == 0 {
            return Some(4 * k);
        }
        if (hash << 2).wrapping_add(g2) & mask == 0 {
            return Some(4 * k + 1);
        }
        if (hash << 3).wrapping_add(g3) & mask == 0 {
            return Some(4 * k + 2);
        }
        hash = (hash << 4).wrapping_add(g4);
        if hash & mask == 0 {
            return Some(4 * k + 3);
        }
    }
    let done = bytes.len() - blocks.remainder().len();
    for (i, &byte) in blocks.remainder().iter().enumerate() {
        hash = roll(hash, gear, byte);
        if hash & mask == 0 {
            return Some(done + i);
        }
    }
    *h = hash;
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Cursor;

    use super::*;

    const MIN: u32 = 64;
    const AVG: u32 = 256;
    const MAX: u32 = 1024;

    const REAL_MIN: u32 = 256 * 1024;
    const REAL_AVG: u32 = 1024 * 1024;
    const REAL_MAX: u32 = 4 * 1024 * 1024;

    /// splitmix64: small, deterministic, good enough for test data and gear tables.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut rng = Rng(seed);
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            data.extend_from_slice(&rng.next().to_le_bytes());
        }
        data.truncate(len);
        data
    }

    fn gear(seed: u64) -> Arc<[u64; 256]> {
        let mut rng = Rng(seed);
        Arc::new(std::array::from_fn(|_| rng.next()))
    }

    fn chunks_with<R: Read>(
        reader: R,
        gear: &Arc<[u64; 256]>,
        (min, avg, max): (u32, u32, u32),
    ) -> Vec<Vec<u8>> {
        GearChunker::new(reader, Arc::clone(gear), min, avg, max)
            .collect::<io::Result<_>>()
            .expect("reading from memory does not fail")
    }

    fn small_chunks(data: &[u8], gear: &Arc<[u64; 256]>) -> Vec<Vec<u8>> {
        chunks_with(Cursor::new(data), gear, (MIN, AVG, MAX))
    }

    /// The offsets where chunks end.
    fn cuts(chunks: &[Vec<u8>]) -> Vec<usize> {
        chunks
            .iter()
            .scan(0, |end, c| {
                *end += c.len();
                Some(*end)
            })
            .collect()
    }

    fn check_sizes(chunks: &[Vec<u8>], min: u32, max: u32) {
        let last = chunks.len().saturating_sub(1);
        for (i, c) in chunks.iter().enumerate() {
            assert!(!c.is_empty(), "chunk {i} is empty");
            assert!(c.len() <= max as usize, "chunk {i} has {} bytes", c.len());
            if i < last {
                assert!(c.len() >= min as usize, "chunk {i} has {} bytes", c.len());
            }
        }
    }

    fn mean(chunks: &[Vec<u8>]) -> f64 {
        chunks.iter().map(Vec::len).sum::<usize>() as f64 / chunks.len() as f64
    }

    /// A reader of `data` in reads of the sizes `sizes` gives, with every fifth call
    /// interrupted.
    struct Trickle<'a, F> {
        data: &'a [u8],
        sizes: F,
        calls: u32,
    }

    impl<F: FnMut() -> usize> Read for Trickle<'_, F> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(5) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = (self.sizes)().min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn trickle<'a>(data: &'a [u8], sizes: impl FnMut() -> usize + 'a) -> impl Read + 'a {
        Trickle {
            data,
            sizes,
            calls: 0,
        }
    }

    /// A reader of `data` that fails once it has given `fail_at` bytes.
    struct Failing<'a> {
        data: &'a [u8],
        left: usize,
    }

    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("the disk is on fire"));
            }
            let n = buf.len().min(self.left).min(self.data.len()).min(4096);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn masks_are_the_high_bits() {
        let c = GearChunker::new(io::empty(), gear(1), REAL_MIN, REAL_AVG, REAL_MAX);
        // log2(1 MiB) = 20: 21 bits before the average, 19 after, at the top of the word.
        assert_eq!(c.cuts.mask_s, 0xFFFF_F800_0000_0000);
        assert_eq!(c.cuts.mask_l, 0xFFFF_E000_0000_0000);
        let c = GearChunker::new(io::empty(), gear(1), MIN, AVG, MAX);
        assert_eq!(
            (c.cuts.mask_s.count_ones(), c.cuts.mask_s.leading_ones()),
            (9, 9)
        );
        assert_eq!(
            (c.cuts.mask_l.count_ones(), c.cuts.mask_l.leading_ones()),
            (7, 7)
        );
    }

    #[test]
    fn chunks_concatenate_to_the_input() {
        let g = gear(1);
        let (min, max) = (MIN as usize, MAX as usize);
        let mut rng = Rng(2);
        let mut lengths = vec![
            0,
            1,
            min - 1,
            min,
            max - 1,
            max,
            max + 1,
            2 * max,
            2 * max + 1,
        ];
        lengths.extend((0..200).map(|_| rng.below(8 * max)));
        lengths.push(300_000);
        for (i, &len) in lengths.iter().enumerate() {
            let data = random_bytes(100 + i as u64, len);
            let chunks = small_chunks(&data, &g);
            assert_eq!(chunks.concat(), data, "input of {len} bytes");
            check_sizes(&chunks, MIN, MAX);
            match len {
                0 => assert!(chunks.is_empty()),
                1 => assert_eq!(chunks, [data]),
                n if n <= min => assert_eq!(chunks.len(), 1, "input of {len} bytes"),
                _ => {}
            }
        }
    }

    #[test]
    fn sizes_stay_in_bounds_and_average_near_avg() {
        let g = gear(3);
        let data = random_bytes(4, 8 << 20);
        let chunks = small_chunks(&data, &g);
        check_sizes(&chunks, MIN, MAX);
        let mean = mean(&chunks);
        eprintln!(
            "min {MIN} avg {AVG} max {MAX}: {} chunks, mean {mean:.1} bytes ({:.3} x avg)",
            chunks.len(),
            mean / f64::from(AVG)
        );
        let avg = f64::from(AVG);
        assert!(
            (0.75 * avg..=1.25 * avg).contains(&mean),
            "mean chunk {mean:.1} bytes"
        );
        // Both masks cut: some chunks end between min and avg, some between avg and max.
        assert!(chunks.iter().any(|c| c.len() < AVG as usize));
        assert!(chunks.iter().any(|c| c.len() > AVG as usize));
    }

    #[test]
    fn real_sizes_on_a_24_mib_stream() {
        let g = gear(5);
        let data = random_bytes(6, 24 << 20);
        let sizes = (REAL_MIN, REAL_AVG, REAL_MAX);
        let chunks = chunks_with(Cursor::new(&data), &g, sizes);
        assert_eq!(chunks.concat(), data);
        check_sizes(&chunks, REAL_MIN, REAL_MAX);
        let mean = mean(&chunks);
        eprintln!(
            "real sizes: {} chunks, mean {:.3} MiB",
            chunks.len(),
            mean / f64::from(1 << 20)
        );
        // With min = avg / 4 the expected mean is about 1.2 x avg (the cut probabilities of
        // the two masks, after the min bytes with none). Twenty chunks give a sample mean
        // that varies by about 10% between seeds, so the +-25% bound is checked on the
        // small sizes' 27 000 chunks; here only that it is not far off.
        let avg = f64::from(REAL_AVG);
        assert!(
            (0.5 * avg..=1.5 * avg).contains(&mean),
            "mean chunk {mean:.0} bytes"
        );
        // The buffer is refilled and compacted many times; reads of other sizes give the
        // same chunks.
        let mut rng = Rng(7);
        let odd = chunks_with(trickle(&data, || 1 + rng.below(3 << 20)), &g, sizes);
        assert_eq!(cuts(&odd), cuts(&chunks));
    }

    /// The rule read plainly: hash every byte from the chunk's start, test each length.
    fn reference_cuts(
        data: &[u8],
        gear: &[u64; 256],
        (min, avg, max): (u32, u32, u32),
    ) -> Vec<usize> {
        let (min, avg, max) = (min as usize, avg as usize, max as usize);
        let bits = avg.ilog2();
        let mask_s = u64::MAX << (64 - (bits + 1));
        let mask_l = u64::MAX << (64 - (bits - 1));
        let mut ends = Vec::new();
        let mut start = 0;
        while start < data.len() {
            let mut end = data.len();
            let mut h = 0u64;
            for (i, &b) in data[start..].iter().enumerate() {
                h = (h << 1).wrapping_add(gear[usize::from(b)]);
                let len = i + 1;
                let cut = if len < min {
                    false
                } else if len < avg {
                    h & mask_s == 0
                } else if len < max {
                    h & mask_l == 0
                } else {
                    true
                };
                if cut {
                    end = start + len;
                    break;
                }
            }
            ends.push(end);
            start = end;
        }
        ends
    }

    #[test]
    fn cuts_follow_the_plain_rule() {
        // Small and odd sizes, min below and above the hash's 64-byte window, min == avg,
        // avg == max, an avg that is not a power of two (its masks are those of 256).
        for (seed, sizes) in [
            (30, (MIN, AVG, MAX)),
            (31, (1, 4, 16)),
            (32, (10, 64, 200)),
            (33, (100, 100, 700)),
            (34, (200, 512, 512)),
            (35, (150, 300, 2000)),
            (36, (2048, 8192, 32768)),
        ] {
            let g = gear(seed);
            let data = random_bytes(seed + 100, 200_000);
            let got = chunks_with(Cursor::new(&data), &g, sizes);
            assert_eq!(got.concat(), data);
            assert_eq!(
                cuts(&got),
                reference_cuts(&data, &g, sizes),
                "sizes {sizes:?}"
            );
        }
    }

    #[test]
    fn boundaries_do_not_depend_on_read_sizes() {
        let g = gear(8);
        let data = random_bytes(9, 300_000);
        let expected = cuts(&small_chunks(&data, &g));
        assert!(expected.len() > 500);
        let mut rng = Rng(10);
        let sizes: [&mut dyn FnMut() -> usize; 4] =
            [&mut || 1, &mut || 7, &mut || 4096, &mut || {
                1 + rng.below(5000)
            }];
        for sizes in sizes {
            let got = chunks_with(trickle(&data, sizes), &g, (MIN, AVG, MAX));
            assert_eq!(got.concat(), data);
            assert_eq!(cuts(&got), expected);
        }
    }

    #[test]
    fn other_gear_tables_cut_elsewhere() {
        let data = random_bytes(11, 1 << 20);
        let a = cuts(&small_chunks(&data, &gear(12)));
        let b = cuts(&small_chunks(&data, &gear(13)));
        let a_set: HashSet<_> = a[..a.len() - 1].iter().collect();
        let shared = b[..b.len() - 1]
            .iter()
            .filter(|c| a_set.contains(c))
            .count();
        eprintln!(
            "{} and {} cuts, {shared} at the same offset",
            a.len(),
            b.len()
        );
        assert!(a.len() > 1000 && b.len() > 1000);
        assert!(shared * 20 < a.len(), "{shared} shared cuts of {}", a.len());
    }

    #[test]
    fn an_insertion_leaves_later_chunks_alone() {
        let g = gear(14);
        let data = random_bytes(15, 2 << 20);
        let at = 1000;
        let mut edited = data[..at].to_vec();
        edited.extend_from_slice(&random_bytes(16, 100));
        edited.extend_from_slice(&data[at..]);

        let before: HashSet<Vec<u8>> = small_chunks(&data, &g).into_iter().collect();
        let after = small_chunks(&edited, &g);
        let ends = cuts(&after);
        let later: Vec<_> = after
            .iter()
            .zip(&ends)
            .filter(|(c, &end)| end - c.len() >= at + 100)
            .map(|(c, _)| c)
            .collect();
        let kept = later.iter().filter(|c| before.contains(**c)).count();
        eprintln!("{kept} of {} later chunks unchanged", later.len());
        assert!(later.len() > 1000);
        assert!(kept * 10 >= later.len() * 8, "{kept} of {}", later.len());
    }

    #[test]
    fn uniform_input_is_cut_at_max() {
        let g = gear(17);
        // With a full window of zeros the hash is the constant -gear[0]; this table does not
        // match either mask there, so no content-defined cut happens.
        let c = GearChunker::new(io::empty(), Arc::clone(&g), MIN, AVG, MAX);
        let h = g[0].wrapping_neg();
        assert!(h & c.cuts.mask_s != 0 && h & c.cuts.mask_l != 0);

        let max = MAX as usize;
        for (len, expected) in [
            (5 * max + 100, vec![max, max, max, max, max, 100]),
            (3 * max, vec![max, max, max]),
            (max - 1, vec![max - 1]),
        ] {
            let chunks = small_chunks(&vec![0; len], &g);
            let sizes: Vec<_> = chunks.iter().map(Vec::len).collect();
            assert_eq!(sizes, expected, "{len} zeros");
        }

        let g = gear(18);
        let c = GearChunker::new(io::empty(), Arc::clone(&g), REAL_MIN, REAL_AVG, REAL_MAX);
        let h = g[0].wrapping_neg();
        assert!(h & c.cuts.mask_s != 0 && h & c.cuts.mask_l != 0);
        let zeros = vec![0; 9 << 20];
        let chunks = chunks_with(Cursor::new(&zeros), &g, (REAL_MIN, REAL_AVG, REAL_MAX));
        let sizes: Vec<_> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4 << 20, 4 << 20, 1 << 20]);
    }

    #[test]
    fn a_read_error_ends_the_chunks_once() {
        let g = gear(19);
        let data = random_bytes(20, 20_000);
        let full = small_chunks(&data, &g);
        for fail_at in [0, 1, 100, 5000, 12_345, 19_999] {
            let mut chunker = GearChunker::new(
                Failing {
                    data: &data,
                    left: fail_at,
                },
                Arc::clone(&g),
                MIN,
                AVG,
                MAX,
            );
            let mut got = Vec::new();
            let err = loop {
                match chunker.next() {
                    Some(Ok(chunk)) => got.push(chunk),
                    Some(Err(e)) => break e,
                    None => panic!("ended without the error (failing after {fail_at} bytes)"),
                }
            };
            assert_eq!(err.kind(), io::ErrorKind::Other);
            assert_eq!(err.to_string(), "the disk is on fire");
            assert!(chunker.next().is_none());
            assert!(chunker.next().is_none());
            // The chunks before the error are the stream's own, and only the bytes after the
            // last cut the read bytes fix (fewer than max) are left out.
            assert_eq!(got[..], full[..got.len()], "failing after {fail_at} bytes");
            let delivered: usize = got.iter().map(Vec::len).sum();
            assert!(delivered <= fail_at && fail_at - delivered < MAX as usize);
            if fail_at > 2 * MAX as usize {
                assert!(!got.is_empty());
            }
        }
    }

    #[test]
    #[ignore = "throughput measurement: cargo test --release -p kyrodb-backup-storage cdc::tests::throughput -- --ignored --nocapture"]
    fn throughput() {
        let g = gear(21);
        let data = random_bytes(22, 512 << 20);
        let mut best = f64::INFINITY;
        let mut count = 0;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            count = 0;
            let mut total = 0;
            for chunk in GearChunker::new(
                Cursor::new(&data),
                Arc::clone(&g),
                REAL_MIN,
                REAL_AVG,
                REAL_MAX,
            ) {
                total += chunk.unwrap().len();
                count += 1;
            }
            assert_eq!(total, data.len());
            best = best.min(start.elapsed().as_secs_f64());
        }
        eprintln!(
            "{:.2} GB/s ({:.0} MiB in {best:.3} s), {count} chunks, mean {:.3} MiB",
            data.len() as f64 / best / 1e9,
            data.len() as f64 / f64::from(1 << 20),
            data.len() as f64 / f64::from(count) / f64::from(1 << 20)
        );
    }
}
