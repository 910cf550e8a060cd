//! Restoring a backup into a data directory: build beside, check, swap.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex};

use kyrodb_backup_format::engine::{
    recover, DistanceMetric, FileSource, LiveIds, RecoveryOptions, RecoveryReport, WalReader,
};
use kyrodb_backup_format::repo::FileEntry;

use crate::chunkstore::ChainStore;
use crate::error::{Error, IoContext, Result};
use crate::repository::StoredBackup;
use kyrodb_backup_datadir::migrate::{migrate_staged, MetricSource};
use kyrodb_backup_datadir::target::{Previous, Staging, Target};
use kyrodb_backup_durable::Syncer;

/// How a restore treats the target; which target, and whether replacing it is allowed, was
/// settled by the [`Target`] check before any work.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Keep the previous contents beside the target instead of deleting them.
    pub keep_previous: bool,
    /// Only check and report; change nothing.
    pub dry_run: bool,
    /// The Unix second of the restore, used to name kept previous contents.
    pub now: u64,
    /// Restore the stored bytes as they are, even a legacy state the current engine does not
    /// start on (for an older engine). Otherwise a legacy state is migrated to the current
    /// layouts in staging, and a state the current engine would refuse is not swapped in.
    pub as_is: bool,
    /// The metric to migrate a legacy snapshot that stores none with.
    pub distance: Option<DistanceMetric>,
}

impl RestoreOptions {
    /// A restore at the Unix second `now` that deletes the previous contents and migrates a
    /// legacy state that stores its metric.
    pub fn new(now: u64) -> Self {
        Self {
            keep_previous: false,
            dry_run: false,
            now,
            as_is: false,
            distance: None,
        }
    }
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
    /// The metric a legacy state was migrated with, and where it came from.
    pub migrated: Option<(DistanceMetric, MetricSource)>,
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
    /// A WAL segment made of archived frames: the frames of `pieces` in order, less those
    /// with a sequence number up to `skip_through` (the snapshot holds them), up to the first
    /// whose timestamp is after `until_ts`. Every piece is checked whole before its frames are
    /// written.
    Archived {
        /// The repository holding the pieces.
        repo: &'a crate::Repository,
        /// The pieces, in replay order.
        pieces: Vec<crate::ArchivedPiece>,
        /// Frames up to this sequence number are left out.
        skip_through: u64,
        /// Frames after the first one later than this second are left out.
        until_ts: u64,
    },
    /// A range of a file outside the repository (a member of a built-in backup's archive).
    FileRange {
        /// The file.
        path: PathBuf,
        /// Where the bytes start.
        offset: u64,
        /// How many there are.
        len: u64,
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
///
/// # Errors
///
/// As [`restore`].
pub fn restore_backup(
    store: &ChainStore,
    backup: &StoredBackup,
    target: &Target,
    opts: &RestoreOptions,
    progress: &dyn crate::Progress,
) -> Result<RestoreReport> {
    restore(
        &RestoreSet::whole_backup(store, backup),
        target,
        opts,
        progress,
    )
}

/// Restores `set` into a checked `target` so that the target is never half-written:
///
/// 1. reads and checks the stored files that are not written (the snapshot id list);
/// 2. writes every file into a staging directory beside the target, checking every chunk's
///    hash (and whole files' hashes) on the way, and fsyncs them;
/// 3. replays the staged state while it is written and checks it against
///    [`RestoreSet::expect`];
/// 4. swaps staging and target in one atomic step (`kyrodb-backup-datadir`);
/// 5. deletes the previous contents, or keeps them as `<target>.previous-<now>`.
///
/// Any failure before step 4 removes the staging directory and leaves the target as it was.
///
/// # Errors
///
/// [`Error::Damaged`] for stored data that does not check, [`Error::DataDir`] when the target
/// refuses the swap, [`Error::Io`] otherwise.
pub fn restore(
    set: &RestoreSet<'_>,
    target: &Target,
    opts: &RestoreOptions,
    progress: &dyn crate::Progress,
) -> Result<RestoreReport> {
    for (store, entry) in &set.also_check {
        io::copy(&mut store.reader(entry), &mut io::sink()).map_err(|e| {
            crate::store_failure(&e).map_or_else(
                || Error::Damaged(format!("backup {}: {}: {e}", set.backup_id, entry.name)),
                Error::StoreFailed,
            )
        })?;
    }
    let mut report = RestoreReport {
        backup_id: set.backup_id.clone(),
        target: target.path(),
        files: Vec::new(),
        bytes: 0,
        vector_count: match set.expect {
            Expectation::VectorCount(n) => n,
            Expectation::LastSeq(_) | Expectation::Recovers => 0,
        },
        replaced: target.occupied(),
        previous: None,
        dry_run: opts.dry_run,
        migrated: None,
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
    let staging = target.stage("restore", &set.backup_id[..8.min(set.backup_id.len())])?;
    let total = set
        .files
        .iter()
        .map(|f| match &f.content {
            PlannedContent::Stored { entry, .. } => entry.size,
            PlannedContent::Generated(b) => b.len() as u64,
            PlannedContent::FileRange { len, .. } => *len,
            PlannedContent::Archived { pieces, .. } => pieces.iter().map(|p| p.size).sum(),
        })
        .sum();
    progress.start("restore", total);
    let (files, count, replayed) =
        build_staging(set, &staging, progress).map_err(|e| e.or_no_space(&target.path(), total))?;
    report.vector_count = count;
    let (staging, files) = if opts.as_is {
        (staging, files)
    } else if !replayed.in_legacy_layouts() {
        // The usual case: the staged replay already showed a current state, so it is not
        // read again; only the engine's rules are checked on what the replay found.
        refuse_unstartable(set, &replayed)?;
        (staging, files)
    } else {
        let (staging, migrated) = migrate_staged(staging, opts.distance, opts.now)
            .map_err(|e| Error::from(e).or_no_space(&target.path(), total))?;
        let Some((m, migrated)) = migrated else {
            refuse_unstartable(set, &replayed)?;
            return finish(staging, files, report, opts);
        };
        report.migrated = m.metric;
        refuse_unstartable(set, &migrated)?;
        let files = staged_files(staging.dir())?;
        (staging, files)
    };
    finish(staging, files, report, opts)
}

/// Refuses a staged state the current engine would not start on.
fn refuse_unstartable(set: &RestoreSet<'_>, report: &RecoveryReport) -> Result<()> {
    match report.current_engine_refusal() {
        Some(why) => Err(Error::Damaged(format!(
            "backup {}: the restored state would not start the current engine: {why}",
            set.backup_id
        ))),
        None => Ok(()),
    }
}

/// The files of a staged directory with their sizes, the MANIFEST first.
fn staged_files(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let len = e.metadata().at(&e.path())?.len();
        files.push((e.file_name().to_string_lossy().into_owned(), len));
    }
    files.sort_by_key(|(name, _)| (name != "MANIFEST", name.clone()));
    Ok(files)
}

/// Swaps the staged state in and completes the report.
fn finish(
    staging: Staging,
    files: Vec<(String, u64)>,
    mut report: RestoreReport,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    report.bytes = files.iter().map(|f| f.1).sum();
    report.files = files;
    let previous = if opts.keep_previous {
        Previous::KeepAs(format!("previous-{}", opts.now))
    } else {
        Previous::Delete
    };
    let swapped = staging.swap_in(&previous)?;
    report.replaced = swapped.replaced;
    report.previous = swapped.previous;
    Ok(report)
}

fn damage(set: &RestoreSet<'_>, f: &PlannedFile<'_>, e: &io::Error) -> Error {
    if let Some(failure) = crate::store_failure(e) {
        return Error::StoreFailed(failure);
    }
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

/// Writes one file's content; returns the bytes written. `out` is not buffered: a stored
/// file's chunks go to it whole, as they were read and checked (no copy), and the contents
/// written in small pieces go through a buffer here.
fn write_content(content: &PlannedContent<'_>, out: &mut impl Write) -> io::Result<u64> {
    if let PlannedContent::Stored {
        store,
        entry,
        keep_frames: None,
    } = content
    {
        let mut reader = store.reader(entry);
        let mut n = 0u64;
        while let Some(chunk) = reader.next_chunk()? {
            out.write_all(chunk)?;
            n += chunk.len() as u64;
        }
        return Ok(n);
    }
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let n = write_small(content, &mut out)?;
    out.flush()?;
    Ok(n)
}

/// [`write_content`] of the contents written in small pieces, into a buffer.
fn write_small(content: &PlannedContent<'_>, out: &mut impl Write) -> io::Result<u64> {
    match content {
        PlannedContent::Generated(bytes) => {
            out.write_all(bytes)?;
            Ok(bytes.len() as u64)
        }
        PlannedContent::Archived {
            repo,
            pieces,
            skip_through,
            until_ts,
        } => {
            out.write_all(&kyrodb_backup_format::engine::WAL_MAGIC.to_le_bytes())?;
            let mut written = 4u64;
            let mut next = None;
            'pieces: for p in pieces {
                let piece = repo.read_piece(&p.key, &p.name).map_err(|e| match e {
                    Error::Backend(b) => {
                        io::Error::other(crate::chunkstore::StoreFailure(b.to_string()))
                    }
                    e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                })?;
                for f in &piece.frames {
                    // Frames the snapshot holds, or an overlapping piece already gave.
                    let expected = next.unwrap_or(skip_through + 1);
                    if f.seq < expected {
                        continue;
                    }
                    if f.timestamp > *until_ts {
                        break 'pieces;
                    }
                    if f.seq != expected {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "archived frames jump to {} where {expected} was next",
                                f.seq
                            ),
                        ));
                    }
                    next = Some(f.seq + 1);
                    let bytes = &piece.body()[f.range.clone()];
                    out.write_all(bytes)?;
                    written += bytes.len() as u64;
                }
            }
            Ok(written)
        }
        PlannedContent::FileRange { path, offset, len } => {
            let mut f = kyrodb_backup_durable::open_no_follow(path)?;
            io::Seek::seek(&mut f, io::SeekFrom::Start(*offset))?;
            let n = io::copy(&mut io::Read::take(io::BufReader::new(f), *len), out)?;
            if n == *len {
                Ok(n)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} ends after {n} of {len} bytes", path.display()),
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

/// How many bytes of a staged file are written between two requests that the disk be given
/// what was written so far: the disk writes while the restore goes on checking and writing,
/// and a file's final fsync waits only for its tail.
const WRITE_BACK_STEP: u64 = 32 << 20;

/// A staged file's writer that tells followers how many bytes are in the file, and starts the
/// disk's writeback every [`WRITE_BACK_STEP`].
struct Publishing<'a> {
    file: File,
    name: String,
    path: PathBuf,
    shared: &'a Progressing,
    syncer: &'a Syncer,
    /// Bytes written since the last write-back request.
    unsynced: u64,
}

impl Write for Publishing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.shared.update(|w| {
            if let Some(e) = w.files.get_mut(&self.name) {
                e.0 += n as u64;
            }
        });
        self.unsynced += n as u64;
        if self.unsynced >= WRITE_BACK_STEP {
            self.syncer.write_back(&self.file, &self.path);
            self.unsynced = 0;
        }
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

/// What staging produced: the files written with their sizes, the live document count, and
/// the replay's report.
type Staged = (Vec<(String, u64)>, u64, RecoveryReport);

/// Writes every file of `set` into `staging` (fsynced, with the directory) while a second
/// thread replays them as they are written, then checks the replayed state against
/// [`RestoreSet::expect`].
fn build_staging(
    set: &RestoreSet<'_>,
    staging: &Staging,
    progress: &dyn crate::Progress,
) -> Result<Staged> {
    let shared = Progressing::default();
    let syncer = Syncer::default();
    let (written, replayed) = std::thread::scope(|s| {
        s.spawn(|| syncer.run());
        let replay = s.spawn(|| {
            let mut ids = LiveIds::default();
            let report = recover(
                &mut Following {
                    dir: staging.dir(),
                    shared: &shared,
                },
                &mut ids,
                &RecoveryOptions {
                    torn_tail_is_error: true,
                },
            );
            (report, ids.len() as u64)
        });
        let written = write_staging(set, staging, &shared, &syncer, progress);
        shared.update(|w| {
            if written.is_ok() {
                w.finished = true;
            } else {
                w.failed = true;
            }
        });
        // Every staged file is durable before the staging directory may be swapped in.
        let written = written.and_then(|w| Ok(syncer.wait().map(|()| w)?));
        syncer.close();
        (written, replay.join().expect("replay thread panicked"))
    });
    let written = written?;
    let (report, count) = replayed;
    let report =
        report.map_err(|e| Error::Damaged(format!("restored state does not recover: {e}")))?;
    check_expectation(set, &report, count)?;
    Ok((written, count, report))
}

fn write_staging(
    set: &RestoreSet<'_>,
    staging: &Staging,
    shared: &Progressing,
    syncer: &Syncer,
    progress: &dyn crate::Progress,
) -> Result<Vec<(String, u64)>> {
    let mut written = Vec::new();
    for f in &set.files {
        let path = staging.dir().join(&f.name);
        let file = staging.create_file(&f.name)?;
        shared.update(|w| {
            w.files.insert(f.name.clone(), (0, false));
        });
        let out = Publishing {
            file,
            name: f.name.clone(),
            path: path.clone(),
            shared,
            syncer,
            unsynced: 0,
        };
        let mut w = crate::ProgressWriter::new(out, progress);
        let n = write_content(&f.content, &mut w).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                damage(set, f, &e)
            } else {
                Error::io(&path, e)
            }
        })?;
        let out = w.into_inner();
        shared.update(|w| {
            if let Some(e) = w.files.get_mut(&f.name) {
                e.1 = true;
            }
        });
        // Synced in the background while the next files are written; see `build_staging`.
        syncer.sync(out.file, &path);
        written.push((f.name.clone(), n));
    }
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
