//! Durable, atomic file-system steps shared by the repository and restores.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, Result};

/// Mode of every directory the repository creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the repository writes.
pub const FILE_MODE: u32 = 0o600;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Suffix that marks a temporary file of this tool; leftovers with it are safe to delete.
pub const TMP_MARKER: &str = ".kbtmp-";

/// A fresh temporary name beside `dest` (same directory, so the rename is atomic).
pub fn tmp_path_for(dest: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    dest.with_file_name(format!("{name}{TMP_MARKER}{}-{n}", std::process::id()))
}

/// Flushes a directory's entries to disk.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Creates `dir` and any missing parents with mode 0700 whatever the umask.
pub fn create_private_dir_all(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            create_private_dir_all(parent)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).at(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(crate::Error::io(dir, e)),
    }
}

/// Creates a new private (0600) file for writing, failing if it exists.
pub fn create_private_file(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .at(path)?;
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .at(path)?;
    Ok(f)
}

/// Writes `bytes` to `dest` atomically and durably: temporary file, fsync, rename, and (when
/// `sync_dir`) fsync of the directory. A crash leaves either no `dest` or the whole of it.
pub fn atomic_write(dest: &Path, bytes: &[u8], sync_dir: bool) -> Result<()> {
    let tmp = tmp_path_for(dest);
    let result = (|| {
        let mut f = create_private_file(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        drop(f);
        fs::rename(&tmp, dest).at(dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if sync_dir {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Opens a file for reading, refusing symlinks (a hostile repository cannot point reads
/// elsewhere).
pub fn open_no_follow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
        .open(path)
}

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
