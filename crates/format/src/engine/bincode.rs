//! Strict little-endian bincode-1.x primitives over a reader with a byte budget.

use std::io::{self, Read};

use crate::{Error, Metadata, Result};

/// Reads bincode fields from `inner`, never past `limit` bytes, optionally hashing what it
/// reads with CRC-32.
pub(crate) struct Fields<R> {
    inner: R,
    pub(crate) pos: u64,
    pub(crate) limit: u64,
    crc: Option<crc32fast::Hasher>,
    what: &'static str,
    /// Offset of the first byte in the enclosing file (for messages).
    pub(crate) base: u64,
}

impl<R: Read> Fields<R> {
    pub(crate) fn new(inner: R, limit: u64, what: &'static str, base: u64, crc: bool) -> Self {
        Self {
            inner,
            pos: 0,
            limit,
            crc: crc.then(crc32fast::Hasher::new),
            what,
            base,
        }
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.limit - self.pos
    }

    pub(crate) fn malformed(&self, detail: impl Into<String>) -> Error {
        Error::Malformed {
            what: self.what,
            offset: self.base + self.pos,
            detail: detail.into(),
        }
    }

    pub(crate) fn bytes(&mut self, buf: &mut [u8]) -> Result<()> {
        if buf.len() as u64 > self.remaining() {
            return Err(self.malformed(format!(
                "a field of {} bytes runs past the end of the payload",
                buf.len()
            )));
        }
        match self.inner.read_exact(buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(Error::Truncated {
                    what: self.what,
                    offset: self.base + self.pos,
                })
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(c) = &mut self.crc {
            c.update(buf);
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A length prefix of a sequence whose elements take at least `min_elem` bytes each.
    pub(crate) fn len(&mut self, min_elem: u64) -> Result<u64> {
        let n = self.u64()?;
        if n.saturating_mul(min_elem.max(1)) > self.remaining() {
            return Err(self.malformed(format!(
                "a length of {n} does not fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }

    /// Reads `n` bytes, growing the buffer as they arrive: a length field that lies (the
    /// payload length itself may) costs memory only for bytes actually present.
    fn byte_vec(&mut self, n: u64) -> Result<Vec<u8>> {
        const STEP: u64 = 1 << 20;
        let mut out = Vec::with_capacity(n.min(STEP) as usize);
        let mut left = n;
        while left > 0 {
            let take = left.min(STEP) as usize;
            let at = out.len();
            out.resize(at + take, 0);
            self.bytes(&mut out[at..])?;
            left -= take as u64;
        }
        Ok(out)
    }

    /// Reads and discards `n` bytes (checksummed like the rest) through a small buffer.
    pub(crate) fn skip(&mut self, n: u64) -> Result<()> {
        let mut buf = [0u8; 4096];
        let mut left = n;
        while left > 0 {
            let take = left.min(buf.len() as u64) as usize;
            self.bytes(&mut buf[..take])?;
            left -= take as u64;
        }
        Ok(())
    }

    pub(crate) fn f32_vec(&mut self) -> Result<Vec<f32>> {
        let n = self.len(4)?;
        let raw = self.byte_vec(n * 4)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub(crate) fn string(&mut self) -> Result<String> {
        let n = self.len(1)?;
        let raw = self.byte_vec(n)?;
        String::from_utf8(raw).map_err(|_| self.malformed("a string is not valid UTF-8"))
    }

    pub(crate) fn metadata(&mut self) -> Result<Metadata> {
        let n = self.len(16)?;
        let mut out = Vec::with_capacity(n.min(1024) as usize);
        for _ in 0..n {
            let k = self.string()?;
            let v = self.string()?;
            out.push((k, v));
        }
        Ok(out)
    }

    /// Reads `n` remaining bytes into memory (for small tails only).
    pub(crate) fn rest(&mut self) -> Result<Vec<u8>> {
        let n = self.remaining();
        self.byte_vec(n)
    }

    pub(crate) fn crc(&self) -> u32 {
        self.crc.clone().map_or(0, crc32fast::Hasher::finalize)
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }
}

/// Appends bincode fields to a byte vector.
#[derive(Default)]
pub(crate) struct Out(pub(crate) Vec<u8>);

impl Out {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn f32_vec(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
    pub(crate) fn string(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    pub(crate) fn metadata(&mut self, m: &Metadata) {
        self.u64(m.len() as u64);
        for (k, v) in m {
            self.string(k);
            self.string(v);
        }
    }
}
