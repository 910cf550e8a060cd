//! Atomic, durable and private file-system steps, shared by everything in `kyrodb_backup` that
//! writes: the repository, restores and migrations of data directories, golden files.
//!
//! What it is for: writing a file so that a crash at any instant leaves either no file or the
//! whole of it ([`atomic_write`]: temporary file, `fsync`, rename, directory `fsync`), making
//! directory entries durable ([`fsync_dir`]), creating directories and files that only their
//! owner can read whatever the umask, and opening files without following symlinks.
//! What it is not for: deciding what to write or where; it knows nothing of KyroDB or of
//! backups.
//!
//! ```
//! use kyrodb_backup_durable::{atomic_write, create_private_dir_all, DIR_MODE};
//! use std::os::unix::fs::PermissionsExt;
//!
//! let tmp = tempfile::tempdir()?;
//! let dir = tmp.path().join("a/b");
//! create_private_dir_all(&dir)?;
//! assert_eq!(std::fs::metadata(&dir)?.permissions().mode() & 0o777, DIR_MODE);
//! atomic_write(&dir.join("f"), b"all or nothing", true)?;
//! assert_eq!(std::fs::read(dir.join("f"))?, b"all or nothing");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of every directory created here.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file written here.
pub const FILE_MODE: u32 = 0o600;

/// Marks a temporary file of this tool; leftovers carrying it are safe to delete.
pub const TMP_MARKER: &str = ".kbtmp-";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file-system step that failed, with the path it concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operation on `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The operating system's error.
    pub fn io_error(&self) -> &std::io::Error {
        match self {
            Error::Io { source, .. } => source,
        }
    }

    /// The path concerned.
    pub fn path(&self) -> &Path {
        match self {
            Error::Io { path, .. } => path,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a path to I/O errors.
pub trait IoContext<T> {
    /// Attaches `path` to the error.
    ///
    /// # Errors
    ///
    /// The error, with the path.
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A fresh temporary name beside `dest` (same directory, so a rename onto `dest` is atomic).
pub fn tmp_path_for(dest: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    dest.with_file_name(format!("{name}{TMP_MARKER}{}-{n}", std::process::id()))
}

/// Flushes a directory's entries to disk.
///
/// # Errors
///
/// When the directory cannot be opened or synced.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Creates `dir` and any missing parents with mode 0700 whatever the umask, making each new
/// entry durable.
///
/// # Errors
///
/// When a directory cannot be created or its parent synced.
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
        Err(e) => Err(e).at(dir),
    }
}

/// Creates a new private (0600) file for writing; fails if it exists.
///
/// # Errors
///
/// When the file exists or cannot be created.
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

/// Writes `bytes` to `dest` atomically and durably: temporary file, `fsync`, rename, and (when
/// `sync_dir`) `fsync` of the directory. A crash leaves either no `dest` (or the old one) or
/// the whole new one; a failure removes the temporary file.
///
/// # Errors
///
/// When any step fails; `dest` is then as it was.
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

/// Opens a file for reading, refusing symlinks (a hostile tree cannot point reads elsewhere).
///
/// # Errors
///
/// The operating system's error (`ELOOP` for a symlink).
pub fn open_no_follow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
        .open(path)
}

/// Syncs files on a thread of its own, so that what a writer wrote reaches the disk while it
/// goes on writing: its final `fsync` then waits only for the tail, instead of for the whole
/// file's writeback after all the work that produced it.
///
/// A thread runs [`Syncer::run`]; the writer asks for [`Syncer::write_back`] every few dozen MiB
/// of a file and hands the file to [`Syncer::sync`] when it is complete, then
/// [`Syncer::wait`]s for all of them and [`Syncer::close`]s. Every sync's error is kept and
/// reported by [`Syncer::wait`]: a write-back shares the file's open description, so a
/// failure it saw would not be seen again by the final `fsync`.
///
/// ```
/// use kyrodb_backup_durable::Syncer;
/// use std::io::Write;
///
/// let tmp = tempfile::tempdir()?;
/// let syncer = Syncer::default();
/// std::thread::scope(|s| {
///     s.spawn(|| syncer.run());
///     let path = tmp.path().join("f");
///     let mut f = std::fs::File::create(&path)?;
///     f.write_all(b"first part")?;
///     syncer.write_back(&f, &path);
///     f.write_all(b", and the rest")?;
///     syncer.sync(f, &path);
///     let done = syncer.wait();
///     syncer.close();
///     done.map_err(std::io::Error::other)
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Syncer {
    state: std::sync::Mutex<SyncQueue>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SyncQueue {
    jobs: std::collections::VecDeque<SyncJob>,
    /// A job is running.
    busy: bool,
    /// The first failure.
    error: Option<Error>,
    /// `run` returns (queued jobs are dropped).
    closed: bool,
}

#[derive(Debug)]
struct SyncJob {
    file: File,
    path: PathBuf,
    /// The final `fsync` (data and metadata); otherwise a write-back of the data so far.
    last: bool,
}

impl Syncer {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncQueue> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the queued syncs in order until [`Syncer::close`]; for a thread of its own.
    pub fn run(&self) {
        let mut q = self.lock();
        loop {
            if q.closed {
                return;
            }
            let Some(job) = q.jobs.pop_front() else {
                q = self
                    .changed
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            };
            q.busy = true;
            drop(q);
            let done = if job.last {
                job.file.sync_all()
            } else {
                job.file.sync_data()
            };
            drop(job.file);
            q = self.lock();
            q.busy = false;
            if let Err(source) = done {
                q.error.get_or_insert(Error::Io {
                    path: job.path,
                    source,
                });
            }
            self.changed.notify_all();
        }
    }

    /// Asks for the data written to `file` so far to be written to disk (`fdatasync` of a
    /// second handle), without waiting for it. Nothing is queued while an earlier write-back
    /// is still waiting to start: that one covers these bytes too. A handle that cannot be
    /// duplicated is skipped (the final sync covers everything).
    pub fn write_back(&self, file: &File, path: &Path) {
        let mut q = self.lock();
        if q.jobs.iter().any(|j| !j.last) {
            return;
        }
        if let Ok(file) = file.try_clone() {
            q.jobs.push_back(SyncJob {
                file,
                path: path.to_path_buf(),
                last: false,
            });
            self.changed.notify_all();
        }
    }

    /// Queues the final `fsync` of a complete file; [`Syncer::wait`] tells how it went.
    pub fn sync(&self, file: File, path: &Path) {
        self.lock().jobs.push_back(SyncJob {
            file,
            path: path.to_path_buf(),
            last: true,
        });
        self.changed.notify_all();
    }

    /// Waits until every queued sync has run (a thread must be in [`Syncer::run`]).
    ///
    /// # Errors
    ///
    /// The first sync that failed, with its path.
    pub fn wait(&self) -> Result<()> {
        let mut q = self.lock();
        while !q.closed && (q.busy || !q.jobs.is_empty()) {
            q = self
                .changed
                .wait(q)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        match q.error.take() {
            Some(e) => Err(e),
            None if q.jobs.is_empty() => Ok(()),
            None => Err(Error::Io {
                path: q.jobs[0].path.clone(),
                source: std::io::Error::other("closed before the file was synced"),
            }),
        }
    }

    /// Makes [`Syncer::run`] return once its current sync is done; what is still queued is
    /// dropped unsynced.
    pub fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.jobs.clear();
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        atomic_write(&f, b"old", true).unwrap();
        atomic_write(&f, b"new contents", false).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"new contents");
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            FILE_MODE
        );
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("missing-dir/f");
        let err = atomic_write(&dest, b"x", true).unwrap_err();
        assert!(err.path().starts_with(tmp.path()));
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_syncer_syncs_every_file_and_reports_the_first_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let syncer = Syncer::default();
        std::thread::scope(|s| {
            s.spawn(|| syncer.run());
            for i in 0..3 {
                let path = tmp.path().join(format!("f{i}"));
                let mut f = File::create(&path).unwrap();
                f.write_all(b"some").unwrap();
                syncer.write_back(&f, &path);
                f.write_all(b" more").unwrap();
                syncer.sync(f, &path);
            }
            assert!(syncer.wait().is_ok());
            // A handle whose sync fails: a pipe cannot be fsynced.
            let (reader, _writer) = std::io::pipe().unwrap();
            let pipe = File::from(std::os::fd::OwnedFd::from(reader));
            syncer.sync(pipe, Path::new("pipe"));
            let err = syncer.wait().unwrap_err();
            assert_eq!(err.path(), Path::new("pipe"));
            assert!(syncer.wait().is_ok());
            syncer.close();
        });
        assert_eq!(fs::read(tmp.path().join("f2")).unwrap(), b"some more");
    }

    #[test]
    fn symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("real"), b"x").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
        assert!(open_no_follow(&tmp.path().join("real")).is_ok());
        assert!(open_no_follow(&tmp.path().join("link")).is_err());
    }
}
