//! Restoring a backup into a data directory: build beside, check, swap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex};

use kyrodb_backup_format::engine::{
    recover, FileSource, LiveIds, RecoveryOptions, RecoveryReport, WalReader,
};
use kyrodb_backup_format::repo::FileEntry;

use crate::chunkstore::ChainStore;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::fsync_dir;
use crate::repository::StoredBackup;

const STAGING_MARKER: &str = ".kyrodb-restore-";

/// What `restore` is asked to do. The caller reads the environment and the clock.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The data directory to restore into.
    pub target: PathBuf,
    /// Whether replacing a non-empty target is allowed (`BACKUP_ALLOW_CLEAR=true`).
    pub allow_clear: bool,
    /// Keep the previous contents beside the target instead of deleting them.
    pub keep_previous: bool,
    /// Only check and report; change nothing.
    pub dry_run: bool,
    /// The Unix second of the restore, used to name kept previous contents.
    pub now: u64,
}

/// What a restore did (or, dry, would do).
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The restored backup.
    pub backup_id: String,
    /// The data directory.
    pub target: PathBuf,
    /// Files written with their sizes.
    pub files: Vec<(String, u64)>,
    /// Bytes written.
    pub bytes: u64,
    /// Live documents of the restored state.
    pub vector_count: u64,
    /// Whether the target held files that were replaced.
    pub replaced: bool,
    /// Where the previous contents were kept (with `keep_previous`).
    pub previous: Option<PathBuf>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Whether a directory is missing or empty. A target that exists but is not a directory is an
/// error: the restore will not replace a file with a directory.
pub fn target_is_empty(target: &Path) -> Result<bool> {
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(target, e)),
        Ok(_) => {
            let meta = fs::metadata(target).at(target)?;
            if !meta.is_dir() {
                return Err(Error::DataDir(format!(
                    "{} exists and is not a directory",
                    target.display()
                )));
            }
            Ok(fs::read_dir(target).at(target)?.next().is_none())
        }
    }
}

/// Finds a process (other than this one) holding a file inside `dir` open, via `/proc`.
pub fn process_using(dir: &Path) -> Option<(u32, String)> {
    let dir = fs::canonicalize(dir).ok()?;
    let me = std::process::id();
    for proc_entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(&dir)) {
                let command = fs::read_to_string(proc_entry.path().join("comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                return Some((pid, command));
            }
        }
    }
    None
}

pub(crate) fn check_not_in_use(target: &Path) -> Result<()> {
    match process_using(target) {
        Some((pid, command)) => Err(Error::InUse {
            path: target.to_path_buf(),
            pid,
            command,
        }),
        None => Ok(()),
    }
}

/// Splits a target into (parent directory, file name), resolving a symlinked target to the
/// directory it points at, so the swap happens where the data lives.
pub(crate) fn resolve_target(target: &Path) -> Result<(PathBuf, String)> {
    let target =
        if fs::symlink_metadata(target).is_ok() {
            fs::canonicalize(target).at(target)?
        } else {
            let parent = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let parent = fs::canonicalize(parent).at(parent)?;
            parent.join(target.file_name().ok_or_else(|| {
                Error::DataDir(format!("{} has no directory name", target.display()))
            })?)
        };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::DataDir(format!("{} has no directory name", target.display())))?;
    let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    Ok((parent, name))
}

/// Removes staging directories that a killed restore of the same target left behind (their
/// process is gone).
fn remove_stale_staging(parent: &Path, name: &str) {
    let prefix = format!(".{name}{STAGING_MARKER}");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = fname
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The content of one file of a restore.
#[derive(Debug)]
pub enum PlannedContent<'a> {
    /// A stored file: whole, or (a WAL segment) cut after its first `keep_frames` frames.
    Stored {
        /// The chain store holding its chunks.
        store: &'a ChainStore,
        /// The file as its backup's manifest lists it.
        entry: &'a FileEntry,
        /// For a point in time: how many WAL frames to keep.
        keep_frames: Option<u64>,
    },
    /// Bytes made for this restore (a MANIFEST naming exactly the restored files).
    Generated(Vec<u8>),
    /// A member of an archive of the engine's built-in backup tool.
    Archive {
        /// The archive.
        path: PathBuf,
        /// The member.
        member: crate::builtin::Member,
    },
}

/// A file of a restore.
#[derive(Debug)]
pub struct PlannedFile<'a> {
    /// Its name in the data directory.
    pub name: String,
    /// Where its bytes come from.
    pub content: PlannedContent<'a>,
}

/// What the restored state must recover to before it may replace the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// This many live documents (restore of a whole backup, whose manifest recorded it).
    VectorCount(u64),
    /// Replay ends at this WAL sequence number (point in time).
    LastSeq(u64),
    /// The state recovers (built-in backups record no live count to compare with).
    Recovers,
}

/// Everything a restore writes, and what it must recover to.
#[derive(Debug)]
pub struct RestoreSet<'a> {
    /// The backup named in reports (for a point in time, the newest backup used).
    pub backup_id: String,
    /// The files, MANIFEST included.
    pub files: Vec<PlannedFile<'a>>,
    /// The check made on the staged state.
    pub expect: Expectation,
    /// Stored files of the backup that are not written to the data dir (its snapshot id
    /// list): read and checked before anything is written, so that a backup with any damaged
    /// byte is refused whole.
    pub also_check: Vec<(&'a ChainStore, FileEntry)>,
}

impl<'a> RestoreSet<'a> {
    /// Every file of one backup, whole.
    pub fn whole_backup(store: &'a ChainStore, backup: &'a StoredBackup) -> Self {
        Self {
            backup_id: backup.manifest.id.clone(),
            files: backup
                .manifest
                .files
                .iter()
                .map(|entry| PlannedFile {
                    name: entry.name.clone(),
                    content: PlannedContent::Stored {
                        store,
                        entry,
                        keep_frames: None,
                    },
                })
                .collect(),
            expect: Expectation::VectorCount(backup.manifest.vector_count),
            also_check: backup
                .manifest
                .snapshot_ids
                .iter()
                .map(|ids| (store, ids.entry()))
                .collect(),
        }
    }
}

/// Restores every file of `backup`; see [`restore`].
pub fn restore_backup(
    store: &ChainStore,
    backup: &StoredBackup,
    opts: &RestoreOptions,
    progress: &dyn crate::Progress,
) -> Result<RestoreReport> {
    restore(&RestoreSet::whole_backup(store, backup), opts, progress)
}

/// Restores `set` into `opts.target` so that the target is never half-written:
///
/// 1. refuses a non-empty target unless `allow_clear`, and a target in use by a process;
/// 2. writes every file into a staging directory beside the target, checking every chunk's
///    hash (and whole files' hashes) on the way, fsyncs them and the directory;
/// 3. replays the staged state and checks it against [`RestoreSet::expect`];
/// 4. swaps staging and target in one atomic `renameat2(RENAME_EXCHANGE)` and fsyncs the parent;
/// 5. deletes the previous contents, or keeps them as `<target>.previous-<now>`.
///
/// Any failure before step 4 removes the staging directory and leaves the target as it was.
pub fn restore(
    set: &RestoreSet<'_>,
    opts: &RestoreOptions,
    progress: &dyn crate::Progress,
) -> Result<RestoreReport> {
    let empty = target_is_empty(&opts.target)?;
    if !empty && !opts.allow_clear {
        return Err(Error::TargetNotEmpty(opts.target.clone()));
    }
    if !empty {
        check_not_in_use(&opts.target)?;
    }
    let (parent, name) = resolve_target(&opts.target)?;
    for (store, entry) in &set.also_check {
        io::copy(&mut store.reader(entry), &mut io::sink()).map_err(|e| {
            Error::Damaged(format!("backup {}: {}: {e}", set.backup_id, entry.name))
        })?;
    }
    let mut report = RestoreReport {
        backup_id: set.backup_id.clone(),
        target: parent.join(&name),
        files: Vec::new(),
        bytes: 0,
        vector_count: match set.expect {
            Expectation::VectorCount(n) => n,
            Expectation::LastSeq(_) | Expectation::Recovers => 0,
        },
        replaced: !empty,
        previous: None,
        dry_run: opts.dry_run,
    };
    if opts.dry_run {
        // Read every chunk (read-only) so a dry run says whether the real one would succeed.
        for f in &set.files {
            let n = write_content(&f.content, &mut io::sink()).map_err(|e| damage(set, f, &e))?;
            report.files.push((f.name.clone(), n));
        }
        report.bytes = report.files.iter().map(|f| f.1).sum();
        return Ok(report);
    }
    if !parent.is_dir() {
        return Err(Error::DataDir(format!(
            "parent directory {} does not exist",
            parent.display()
        )));
    }
    remove_stale_staging(&parent, &name);
    let staging = parent.join(format!(
        ".{name}{STAGING_MARKER}{}-{}",
        std::process::id(),
        &set.backup_id[..8.min(set.backup_id.len())]
    ));
    tracing::debug!(staging = %staging.display(), files = set.files.len(), "building the new state beside the target");
    let total = set
        .files
        .iter()
        .map(|f| match &f.content {
            PlannedContent::Stored { entry, .. } => entry.size,
            PlannedContent::Generated(b) => b.len() as u64,
            PlannedContent::Archive { member, .. } => member.len,
        })
        .sum();
    progress.start("restore", total);
    let built = build_staging(set, &staging, progress);
    let (files, count) = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    report.bytes = files.iter().map(|f| f.1).sum();
    report.files = files;
    report.vector_count = count;
    let swapped = (|| {
        if !empty {
            check_not_in_use(&report.target)?;
        }
        swap_in(&staging, &report.target, &parent)
    })();
    let replaced_old = match swapped {
        Ok(r) => {
            tracing::debug!(target = %report.target.display(), replaced = r, "swapped in atomically");
            r
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if replaced_old {
        // The staging path now holds the previous contents.
        if opts.keep_previous {
            let kept = parent.join(format!("{name}.previous-{}", opts.now));
            fs::rename(&staging, &kept).at(&kept)?;
            fsync_dir(&parent)?;
            report.previous = Some(kept);
        } else {
            fs::remove_dir_all(&staging).at(&staging)?;
            fsync_dir(&parent)?;
        }
    }
    Ok(report)
}

fn damage(set: &RestoreSet<'_>, f: &PlannedFile<'_>, e: &io::Error) -> Error {
    Error::Damaged(format!("backup {}: {}: {e}", set.backup_id, f.name))
}

/// Passes everything read through to a writer, so a WAL reader that stops after N frames has
/// copied exactly those frames' bytes.
struct Copying<'w, R, W: Write> {
    inner: R,
    out: &'w mut W,
    copied: u64,
}

impl<R: io::Read, W: Write> io::Read for Copying<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        self.copied += n as u64;
        Ok(n)
    }
}

/// Writes one file's content; returns the bytes written.
fn write_content(content: &PlannedContent<'_>, out: &mut impl Write) -> io::Result<u64> {
    match content {
        PlannedContent::Generated(bytes) => {
            out.write_all(bytes)?;
            Ok(bytes.len() as u64)
        }
        PlannedContent::Archive { path, member } => {
            let mut r = crate::builtin::member_reader(path, member)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let n = io::copy(&mut r, out)?;
            if n == member.len {
                Ok(n)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "archive member {} ends after {n} of {} bytes",
                        member.name, member.len
                    ),
                ))
            }
        }
        PlannedContent::Stored {
            store,
            entry,
            keep_frames: None,
        } => io::copy(&mut store.reader(entry), out),
        PlannedContent::Stored {
            store,
            entry,
            keep_frames: Some(keep),
        } => {
            let mut copying = Copying {
                inner: store.reader(entry),
                out,
                copied: 0,
            };
            let bad = |e: kyrodb_backup_format::Error| {
                io::Error::new(io::ErrorKind::InvalidData, e.to_string())
            };
            let mut wal = WalReader::new(&mut copying).map_err(bad)?;
            for i in 0..*keep {
                if wal.next_frame().map_err(bad)?.is_none() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("holds {i} frames, {keep} needed"),
                    ));
                }
            }
            Ok(copying.copied)
        }
    }
}

/// How far the writing of the staging directory has got: the check replay follows it, so
/// the restored state is checked while it is written instead of read again afterwards.
#[derive(Default)]
struct Progressing {
    state: Mutex<Written>,
    changed: Condvar,
}

#[derive(Default)]
struct Written {
    /// Per file: bytes in the file so far, and whether it is complete.
    files: HashMap<String, (u64, bool)>,
    /// Every file is written.
    finished: bool,
    /// The writing failed; followers stop.
    failed: bool,
}

impl Progressing {
    fn update(&self, f: impl FnOnce(&mut Written)) {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
        self.changed.notify_all();
    }

    /// Waits until `ready` says something other than `None`.
    fn wait_for<T>(&self, mut ready: impl FnMut(&Written) -> Option<T>) -> T {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(t) = ready(&st) {
                return t;
            }
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// A staged file's writer that tells followers how many bytes are in the file.
struct Publishing<'a> {
    file: File,
    name: String,
    shared: &'a Progressing,
}

impl Write for Publishing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.shared.update(|w| {
            if let Some(e) = w.files.get_mut(&self.name) {
                e.0 += n as u64;
            }
        });
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The staging directory as a [`FileSource`] that reads each file as it is being written.
struct Following<'a> {
    dir: &'a Path,
    shared: &'a Progressing,
}

struct FollowReader<'a> {
    file: File,
    name: String,
    pos: u64,
    shared: &'a Progressing,
}

fn writing_stopped() -> io::Error {
    io::Error::other("writing the staged files stopped")
}

impl io::Read for FollowReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.pos;
        let available = self.shared.wait_for(|w| match w.files.get(&self.name) {
            Some(&(len, done)) if len > pos || done => Some(Ok(len - pos)),
            _ if w.failed => Some(Err(writing_stopped())),
            _ => None,
        })?;
        if available == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl FileSource for Following<'_> {
    fn open(&mut self, name: &str) -> io::Result<Box<dyn io::Read + '_>> {
        let started = self.shared.wait_for(|w| {
            if w.files.contains_key(name) {
                Some(Ok(true))
            } else if w.failed {
                Some(Err(writing_stopped()))
            } else if w.finished {
                Some(Ok(false))
            } else {
                None
            }
        })?;
        if !started {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name} is not among the restored files"),
            ));
        }
        Ok(Box::new(io::BufReader::with_capacity(
            1 << 20,
            FollowReader {
                file: File::open(self.dir.join(name))?,
                name: name.to_string(),
                pos: 0,
                shared: self.shared,
            },
        )))
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut names = self.shared.wait_for(|w| {
            if w.failed {
                Some(Err(writing_stopped()))
            } else if w.finished {
                Some(Ok(w.files.keys().cloned().collect::<Vec<_>>()))
            } else {
                None
            }
        })?;
        names.sort();
        Ok(names)
    }
}

/// Writes every file of `set` into `staging` (fsynced, with the directory) while a second
/// thread replays them as they are written, then checks the replayed state against
/// [`RestoreSet::expect`].
fn build_staging(
    set: &RestoreSet<'_>,
    staging: &Path,
    progress: &dyn crate::Progress,
) -> Result<(Vec<(String, u64)>, u64)> {
    fs::create_dir(staging).at(staging)?;
    let shared = Progressing::default();
    let (written, replayed) = std::thread::scope(|s| {
        let replay = s.spawn(|| {
            let mut ids = LiveIds::default();
            let report = recover(
                &mut Following {
                    dir: staging,
                    shared: &shared,
                },
                &mut ids,
                &RecoveryOptions {
                    torn_tail_is_error: true,
                },
            );
            (report, ids.len() as u64)
        });
        let written = write_staging(set, staging, &shared, progress);
        shared.update(|w| {
            if written.is_ok() {
                w.finished = true;
            } else {
                w.failed = true;
            }
        });
        (written, replay.join().expect("replay thread panicked"))
    });
    let written = written?;
    let (report, count) = replayed;
    let report =
        report.map_err(|e| Error::Damaged(format!("restored state does not recover: {e}")))?;
    check_expectation(set, &report, count)?;
    Ok((written, count))
}

fn write_staging(
    set: &RestoreSet<'_>,
    staging: &Path,
    shared: &Progressing,
    progress: &dyn crate::Progress,
) -> Result<Vec<(String, u64)>> {
    let mut written = Vec::new();
    for f in &set.files {
        let path = staging.join(&f.name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        shared.update(|w| {
            w.files.insert(f.name.clone(), (0, false));
        });
        let out = Publishing {
            file,
            name: f.name.clone(),
            shared,
        };
        let mut w = crate::ProgressWriter::new(BufWriter::with_capacity(1 << 20, out), progress);
        let n = write_content(&f.content, &mut w).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                damage(set, f, &e)
            } else {
                Error::io(&path, e)
            }
        })?;
        let out = w
            .into_inner()
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        shared.update(|w| {
            if let Some(e) = w.files.get_mut(&f.name) {
                e.1 = true;
            }
        });
        out.file.sync_all().at(&path)?;
        written.push((f.name.clone(), n));
    }
    fsync_dir(staging)?;
    Ok(written)
}

/// Whether the replayed staged state is what the restore promised.
fn check_expectation(set: &RestoreSet<'_>, report: &RecoveryReport, count: u64) -> Result<()> {
    match set.expect {
        Expectation::VectorCount(n) if n != count => Err(Error::Damaged(format!(
            "restored state recovers to {count} documents, backup {} recorded {n}",
            set.backup_id
        ))),
        Expectation::LastSeq(want) => {
            let last = report.last_seq();
            if last == want {
                Ok(())
            } else {
                Err(Error::Damaged(format!(
                    "restored state replays to WAL sequence {last}, the plan needs {want}"
                )))
            }
        }
        Expectation::VectorCount(_) | Expectation::Recovers => Ok(()),
    }
}

/// Puts `staging` at `target`. Returns whether an old target was swapped out (it is then at
/// the staging path).
pub(crate) fn swap_in(staging: &Path, target: &Path, parent: &Path) -> Result<bool> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let exists = fs::symlink_metadata(target).is_ok();
    if exists {
        renameat_with(CWD, staging, CWD, target, RenameFlags::EXCHANGE).map_err(|e| {
            if e == rustix::io::Errno::BUSY || e == rustix::io::Errno::XDEV {
                Error::Unswappable(format!(
                    "{} cannot be swapped atomically ({e}): is it a mount point? restore into a directory inside it",
                    target.display()
                ))
            } else {
                Error::io(target, io::Error::from(e))
            }
        })?;
    } else {
        fs::rename(staging, target).at(target)?;
    }
    fsync_dir(parent)?;
    Ok(exists)
}
