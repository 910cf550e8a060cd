//! Progress of long operations, in bytes.

use std::io::Write;

/// Receives how far a long operation has got, in bytes; the CLI draws progress bars from it.
/// Calls must be cheap: they happen once per chunk or buffer.
pub trait Progress: Sync {
    /// The operation starts and will move about `total` bytes.
    fn start(&self, what: &str, total: u64);
    /// `bytes` more were processed.
    fn advance(&self, bytes: u64);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// A writer that reports the bytes going through it.
pub struct ProgressWriter<'a, W> {
    inner: W,
    progress: &'a dyn Progress,
}

impl<'a, W> ProgressWriter<'a, W> {
    /// Wraps `inner`.
    pub fn new(inner: W, progress: &'a dyn Progress) -> Self {
        Self { inner, progress }
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for ProgressWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
