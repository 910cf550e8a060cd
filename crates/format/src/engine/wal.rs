//! WAL segments: frames of W1, W2 or W3 entries.

use std::io::{self, Read, Write};

use serde::Serialize;

use crate::engine::bincode::{Fields, Out};
use crate::{Error, Metadata, Result, WalOp};

/// WAL magic: `WAL\0` read as a little-endian u32.
pub const WAL_MAGIC: u32 = 0x5741_4C00;
/// Largest entry length the engine accepts.
pub const MAX_WAL_ENTRY: u32 = 100 * 1024 * 1024;

/// The WAL entry layouts, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WalLayout {
    /// `op, doc_id, embedding, timestamp`.
    W1,
    /// `op, doc_id, embedding, metadata, timestamp`.
    W2,
    /// `op, doc_id, embedding, metadata, seq_no, timestamp` (current).
    W3,
}

/// One WAL entry, whatever its layout.
#[derive(Debug, Clone, PartialEq)]
pub struct WalEntry {
    /// What it does.
    pub op: WalOp,
    /// The document.
    pub doc_id: u64,
    /// The embedding (empty for deletes and metadata updates).
    pub embedding: Vec<f32>,
    /// The metadata (empty for W1).
    pub metadata: Metadata,
    /// Sequence number (0 when the layout has none).
    pub seq_no: u64,
    /// Unix seconds of the write.
    pub timestamp: u64,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct WalFrame {
    /// Offset of the frame's length field in the segment.
    pub offset: u64,
    /// Entry length.
    pub len: u32,
    /// The entry.
    pub entry: WalEntry,
    /// Its layout.
    pub layout: WalLayout,
}

impl WalFrame {
    /// Offset just after the frame.
    pub fn end(&self) -> u64 {
        self.offset + 8 + u64::from(self.len)
    }
}

/// Reads a segment frame by frame. A short read at the end (a torn frame from a crash
/// mid-append) ends the iteration, as in the engine; [`WalReader::torn`] says whether that
/// happened and [`WalReader::valid_len`] where the last whole frame ends. A bad CRC is an error.
pub struct WalReader<R: Read> {
    inner: R,
    pos: u64,
    valid_len: u64,
    torn: bool,
    done: bool,
}

/// Reads as much of `buf` as the reader has; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> WalReader<R> {
    /// Checks the magic. A file shorter than the magic is an error.
    ///
    /// # Errors
    ///
    /// When the header cannot be read or written, or is not a WAL header.
    pub fn new(mut inner: R) -> Result<Self> {
        let mut m = [0u8; 4];
        let n = read_full(&mut inner, &mut m)?;
        if n < 4 {
            return Err(Error::Truncated {
                what: "WAL segment magic",
                offset: n as u64,
            });
        }
        let magic = u32::from_le_bytes(m);
        if magic != WAL_MAGIC {
            return Err(Error::BadMagic {
                what: "WAL segment",
                expected: WAL_MAGIC,
                found: magic,
            });
        }
        Ok(Self {
            inner,
            pos: 4,
            valid_len: 4,
            torn: false,
            done: false,
        })
    }

    /// Offset just after the last whole frame read so far.
    pub fn valid_len(&self) -> u64 {
        self.valid_len
    }

    /// Whether the segment ended in a torn frame.
    pub fn torn(&self) -> bool {
        self.torn
    }

    fn tear(&mut self) -> Option<WalFrame> {
        self.torn = true;
        self.done = true;
        None
    }

    /// The next whole frame, or `None` at the end (clean or torn).
    ///
    /// # Errors
    ///
    /// When a whole frame fails its CRC or does not decode (a short tail is not an error: see
    /// `torn`).
    pub fn next_frame(&mut self) -> Result<Option<WalFrame>> {
        if self.done {
            return Ok(None);
        }
        let offset = self.pos;
        let mut lb = [0u8; 4];
        match read_full(&mut self.inner, &mut lb)? {
            0 => {
                self.done = true;
                return Ok(None);
            }
            4 => {}
            _ => return Ok(self.tear()),
        }
        let len = u32::from_le_bytes(lb);
        if len == 0 || len > MAX_WAL_ENTRY {
            return Err(Error::Malformed {
                what: "WAL frame",
                offset,
                detail: format!("entry length {len} is outside 1..=100 MiB"),
            });
        }
        let mut body = Vec::new();
        let got = (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut body)?;
        if got < len as usize {
            return Ok(self.tear());
        }
        let mut cb = [0u8; 4];
        if read_full(&mut self.inner, &mut cb)? < 4 {
            return Ok(self.tear());
        }
        let stored = u32::from_le_bytes(cb);
        let computed = crc32fast::hash(&body);
        if stored != computed {
            return Err(Error::Checksum {
                what: "WAL frame",
                offset,
                stored: format!("{stored:#010x}"),
                computed: format!("{computed:#010x}"),
            });
        }
        let (entry, layout) = decode_entry(&body).ok_or_else(|| Error::Malformed {
            what: "WAL frame",
            offset,
            detail: "entry matches no known layout".into(),
        })?;
        self.pos += 8 + u64::from(len);
        self.valid_len = self.pos;
        Ok(Some(WalFrame {
            offset,
            len,
            entry,
            layout,
        }))
    }
}

fn decode_as(body: &[u8], layout: WalLayout) -> Option<WalEntry> {
    let mut f = Fields::new(body, body.len() as u64, "WAL entry", 0, false);
    let r = (|| -> Result<WalEntry> {
        let op = f.u32()?;
        let op = WalOp::from_index(op).ok_or_else(|| f.malformed("unknown op"))?;
        let doc_id = f.u64()?;
        let embedding = f.f32_vec()?;
        let metadata = if layout == WalLayout::W1 {
            Vec::new()
        } else {
            f.metadata()?
        };
        let seq_no = if layout == WalLayout::W3 { f.u64()? } else { 0 };
        let timestamp = f.u64()?;
        Ok(WalEntry {
            op,
            doc_id,
            embedding,
            metadata,
            seq_no,
            timestamp,
        })
    })();
    match r {
        Ok(e) if f.remaining() == 0 => Some(e),
        _ => None,
    }
}

/// Decodes an entry strictly, trying the current layout first.
pub fn decode_entry(body: &[u8]) -> Option<(WalEntry, WalLayout)> {
    [WalLayout::W3, WalLayout::W2, WalLayout::W1]
        .into_iter()
        .find_map(|l| decode_as(body, l).map(|e| (e, l)))
}

/// Encodes an entry in a layout. Fields the layout lacks are dropped (W1 has no metadata,
/// W1 and W2 no sequence number).
pub fn encode_entry(e: &WalEntry, layout: WalLayout) -> Vec<u8> {
    let mut o = Out::default();
    o.u32(e.op.index());
    o.u64(e.doc_id);
    o.f32_vec(&e.embedding);
    if layout != WalLayout::W1 {
        o.metadata(&e.metadata);
    }
    if layout == WalLayout::W3 {
        o.u64(e.seq_no);
    }
    o.u64(e.timestamp);
    o.0
}

/// Writes a segment the way the engine does: the magic, then one frame per entry.
pub struct WalWriter<W: Write> {
    inner: W,
}

impl<W: Write> WalWriter<W> {
    /// Writes the magic.
    ///
    /// # Errors
    ///
    /// When the header cannot be read or written, or is not a WAL header.
    pub fn new(mut inner: W) -> Result<Self> {
        inner.write_all(&WAL_MAGIC.to_le_bytes())?;
        Ok(Self { inner })
    }

    /// Appends one frame.
    ///
    /// # Errors
    ///
    /// When the entry does not fit `layout`, or the writer fails.
    pub fn append(&mut self, e: &WalEntry, layout: WalLayout) -> Result<()> {
        let body = encode_entry(e, layout);
        self.inner.write_all(&(body.len() as u32).to_le_bytes())?;
        self.inner.write_all(&body)?;
        self.inner
            .write_all(&crc32fast::hash(&body).to_le_bytes())?;
        Ok(())
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}
