//! Following a live data directory's WAL frame by frame, for a continuous archiver.
//!
//! A [`Follower`] holds the data directory open and remembers, for every WAL segment it has
//! opened, the byte offset of the next frame it has not returned yet. Each [`Follower::poll`]
//! checks that the directory is still the one it started on, reads the MANIFEST, opens the
//! snapshot and segments it names that are new, and appends the raw bytes of the frames that
//! follow the last one returned, in sequence order. Segments stay open until they are read to
//! their end and a later one exists, so the engine's compaction after a snapshot cannot take
//! frames away that the follower has already seen the segment of. Frames that were compacted
//! away before the follower could open their segment are reported as a gap, with the snapshot
//! that covers them, also while the MANIFEST still lists the deleted segments (the engine
//! rewrites it after deleting them, which can take long): a segment missing twice under the
//! same MANIFEST, one naming a snapshot, is taken as compacted, not waited for.
//!
//! Only the current WAL layout (W3, with sequence numbers) can be followed.
//!
//! ```
//! use kyrodb_backup_datadir::follow::{Follower, Start};
//!
//! let tmp = tempfile::tempdir()?;
//! std::fs::write(
//!     tmp.path().join("MANIFEST"),
//!     r#"{"version":1,"latest_snapshot":null,"wal_segments":["wal_1.wal"],"last_updated":0}"#,
//! )?;
//! std::fs::write(tmp.path().join("wal_1.wal"), 0x5741_4C00u32.to_le_bytes())?;
//! let (mut follower, start) = Follower::start(tmp.path(), None)?;
//! assert!(matches!(start, Start::Fresh { snapshot: None }));
//! let mut frames = Vec::new();
//! let poll = follower.poll(&mut frames, 1 << 20)?;
//! assert!(poll.batch.is_none() && frames.is_empty());
//! assert_eq!(follower.next_seq(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use kyrodb_backup_durable::IoContext;
use kyrodb_backup_format::engine::{
    DataDirManifest, SnapshotReader, WalLayout, WalReader, MAX_WAL_ENTRY, WAL_MAGIC,
};
use kyrodb_backup_format::Error as FormatError;
use rustix::fs::{Mode, OFlags};

use crate::capture::{list_dir, PrefixReader, MAX_CAPTURE_ATTEMPTS};
use crate::error::{Error, Result};

/// How many bytes of a segment are read at once (more when one frame is larger).
const CHUNK: u64 = 256 * 1024;

/// The last frame already archived, to resume following after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Its sequence number.
    pub seq: u64,
    /// The CRC-32 stored in its frame.
    pub crc: u32,
}

/// A snapshot the MANIFEST names, opened.
#[derive(Debug)]
pub struct SnapshotSeen {
    /// Its file name in the data directory.
    pub name: String,
    /// The `timestamp` of its header (Unix seconds when it was taken).
    pub timestamp: u64,
    /// The highest WAL sequence number it contains: the MANIFEST's `latest_snapshot_wal_seq`,
    /// or the snapshot's own when the MANIFEST does not record it.
    pub last_wal_seq: u64,
    /// The file, opened without following symlinks, positioned at its start; it stays
    /// readable after the engine deletes it.
    pub file: File,
}

/// How following starts, as [`Follower::start`] found the directory.
#[derive(Debug)]
pub enum Start {
    /// No resume point was given: following starts from the directory's current state, the
    /// snapshot the MANIFEST names (if any), then the frames after it.
    Fresh {
        /// The snapshot the MANIFEST names.
        snapshot: Option<SnapshotSeen>,
    },
    /// The frames the directory holds continue the archived ones: the first frame returned
    /// is the one after the resume point.
    Continues,
    /// Frames after the resume point are gone (compacted away) but a snapshot covers them:
    /// following resumes after the snapshot's `last_wal_seq`.
    Gap {
        /// The snapshot that covers the missing frames.
        snapshot: SnapshotSeen,
    },
    /// The directory does not continue the archived frames (another history, or behind the
    /// resume point); the follower returned reports nothing but divergence.
    Diverged,
}

/// What one [`Follower::poll`] appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Number of frames.
    pub frames: u64,
    /// Sequence number of the first.
    pub first_seq: u64,
    /// Sequence number of the last (the frames are consecutive).
    pub last_seq: u64,
    /// Timestamp of the first.
    pub first_ts: u64,
    /// Timestamp of the last.
    pub last_ts: u64,
    /// The CRC-32 stored in the last frame (with `last_seq`, the next [`Resume`]).
    pub last_crc: u32,
}

/// What one [`Follower::poll`] found.
#[derive(Debug, Default)]
pub struct Poll {
    /// The frames appended, if any. They come before a gap or a divergence reported by the
    /// same poll.
    pub batch: Option<Batch>,
    /// The poll stopped because another frame would have exceeded the byte limit: poll again
    /// without waiting.
    pub more: bool,
    /// A snapshot the MANIFEST names since the last poll (reported once).
    pub snapshot: Option<SnapshotSeen>,
    /// Frames after the batch are gone; this snapshot covers them. The next poll continues
    /// after its `last_wal_seq`.
    pub gap: Option<SnapshotSeen>,
    /// The directory no longer continues what was returned (it was replaced, or frames are
    /// missing that no snapshot covers): start again.
    pub diverged: bool,
}

/// Follows the WAL of a live data directory: see the [module documentation](self).
#[derive(Debug)]
pub struct Follower {
    /// The data directory's path, as given.
    path: PathBuf,
    /// The directory itself, open: every file is opened relative to it.
    dir: File,
    /// Its (device, inode).
    dir_id: (u64, u64),
    /// Sequence number of the next frame to return.
    next_seq: u64,
    /// Open segments, in MANIFEST order.
    segments: Vec<Segment>,
    /// Listed segments not to open again: read to their end and closed, or compacted away
    /// while the MANIFEST that still lists them was current.
    finished: Vec<String>,
    /// Listed segments found missing under the current MANIFEST (cleared when it changes).
    missing: Vec<String>,
    /// The MANIFEST changed since the snapshot it names was last looked at: a snapshot of the
    /// current one's name may be another file now (an engine that reuses a name renames a
    /// new snapshot over the old one).
    check_named: bool,
    /// The segments the last MANIFEST lists, in order.
    listed: Vec<String>,
    /// The snapshot it names, with its recorded `latest_snapshot_wal_seq`.
    named: Option<(String, Option<u64>)>,
    /// The last MANIFEST's bytes.
    manifest: Vec<u8>,
    /// Whether it is the legacy text layout (its segment list depends on the listing).
    legacy: bool,
    /// Buffer for reading the MANIFEST.
    read_buf: Vec<u8>,
    /// The snapshot the MANIFEST names, as last opened.
    snapshot: Option<Current>,
    /// Bytes of a segment read ahead.
    window: Window,
    /// Key of the next segment opened.
    next_key: u64,
    /// Divergence was reported; nothing else is.
    diverged: bool,
}

/// A WAL segment, open.
#[derive(Debug)]
struct Segment {
    name: String,
    file: File,
    /// Tells segments apart in the read-ahead window.
    key: u64,
    /// Offset of the next frame not consumed (0 before the magic was checked).
    pos: u64,
    /// Length at the last `fstat`.
    size: u64,
}

/// The snapshot the MANIFEST names.
#[derive(Debug)]
struct Current {
    name: String,
    timestamp: u64,
    last_wal_seq: u64,
    /// (device, inode) of `file`.
    id: (u64, u64),
    /// Kept open to hand out again when a reopen by name finds another file or none.
    file: File,
}

/// Bytes `[start, start + buf.len())` of the segment with key `key`.
struct Window {
    key: u64,
    start: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("key", &self.key)
            .field("start", &self.start)
            .field("len", &self.buf.len())
            .finish()
    }
}

/// A whole frame's facts.
struct FrameMeta {
    /// Its length in bytes (length field, entry, CRC).
    len: u64,
    seq: u64,
    timestamp: u64,
    crc: u32,
}

/// What is at a segment's position.
enum Next<'a> {
    /// A whole frame, with its bytes.
    Frame(FrameMeta, &'a [u8]),
    /// Nothing more.
    End,
    /// An incomplete frame (or magic).
    Torn,
}

/// What a walk does with a frame.
enum Action {
    /// Consume it and go on.
    Next,
    /// Consume it and stop.
    Last,
    /// Stop before it.
    Stop,
}

/// Why a poll stopped before the frames ran out.
enum Stopped {
    /// The byte limit.
    Budget,
    /// A frame with this sequence number came where the next one was expected.
    Ahead(u64),
}

/// The outcome of one MANIFEST read.
enum Refreshed {
    /// Everything named is open; a newly named snapshot, if any.
    Ready(Option<SnapshotSeen>),
    /// A file it names vanished before it could be opened: read it again.
    Vanished,
}

impl Follower {
    /// Starts following `dir`: from its current state (`resume` none), or after the last frame
    /// already archived. Every file the MANIFEST names is opened at once.
    ///
    /// With a resume point: when a listed segment holds its frame, the same CRC continues and
    /// another diverges. Otherwise a directory whose newest sequence number (of its frames, or
    /// its snapshot's `last_wal_seq`) is behind the resume point diverges, a snapshot ending
    /// exactly at it continues, and one beyond it is a gap (following resumes after the
    /// snapshot); anything else diverges.
    ///
    /// # Errors
    ///
    /// [`Error::DataDir`] when `dir` is missing, has no MANIFEST, names files that are not
    /// regular files, keeps changing, or holds legacy WAL entries (without sequence numbers);
    /// [`Error::Format`] for a MANIFEST, snapshot or frame that does not decode, or a frame
    /// with a bad CRC; [`Error::Io`] when a file cannot be read.
    pub fn start(dir: &Path, resume: Option<Resume>) -> Result<(Follower, Start)> {
        let handle = match rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::NOENT) => {
                return Err(Error::DataDir(format!(
                    "data directory {} does not exist",
                    dir.display()
                )))
            }
            Err(rustix::io::Errno::NOTDIR) => {
                return Err(Error::DataDir(format!(
                    "{} is not a directory",
                    dir.display()
                )))
            }
            Err(e) => return Err(io::Error::from(e)).at(dir)?,
        };
        let meta = handle.metadata().at(dir)?;
        let mut f = Follower {
            path: dir.to_path_buf(),
            dir: handle,
            dir_id: (meta.dev(), meta.ino()),
            next_seq: 1,
            segments: Vec::new(),
            finished: Vec::new(),
            missing: Vec::new(),
            check_named: false,
            listed: Vec::new(),
            named: None,
            manifest: Vec::new(),
            legacy: false,
            read_buf: Vec::new(),
            snapshot: None,
            window: Window {
                key: 0,
                start: 0,
                buf: Vec::new(),
            },
            next_key: 1,
            diverged: false,
        };
        let seen = f.refresh()?;
        let covered = f.covered();
        let Some(r) = resume else {
            f.next_seq = covered + 1;
            f.walk(|fr, _| {
                if fr.seq <= covered {
                    Action::Next
                } else {
                    Action::Stop
                }
            })?;
            f.window.trim();
            return Ok((f, Start::Fresh { snapshot: seen }));
        };
        let mut hit = None;
        f.walk(|fr, _| {
            if fr.seq < r.seq {
                Action::Next
            } else {
                hit = Some((fr.seq, fr.crc));
                if fr.seq == r.seq {
                    Action::Last
                } else {
                    Action::Stop
                }
            }
        })?;
        f.window.trim();
        // Some(true): continues; Some(false): diverged; None: a gap the snapshot covers.
        // Without a hit every frame is older than the resume point, so only the snapshot can
        // reach it.
        let continues = match hit {
            Some((seq, crc)) if seq == r.seq => Some(crc == r.crc),
            Some((seq, _)) if covered == r.seq => Some(seq == r.seq + 1),
            Some((seq, _)) if covered > r.seq && seq <= covered + 1 => None,
            None if covered == r.seq => Some(true),
            None if covered > r.seq => None,
            Some(_) | None => Some(false),
        };
        let start = match (continues, seen) {
            (Some(true), _) => {
                f.next_seq = r.seq + 1;
                Start::Continues
            }
            (None, Some(snapshot)) => {
                f.next_seq = covered + 1;
                Start::Gap { snapshot }
            }
            (Some(false) | None, _) => {
                f.diverged = true;
                Start::Diverged
            }
        };
        tracing::debug!(next_seq = f.next_seq, ?start, "following a data directory");
        Ok((f, start))
    }

    /// Appends the raw bytes of the next frames (sequence numbers [`next_seq`](Self::next_seq)
    /// on, exactly as in their segment) to `out`, stopping before `out` would grow past
    /// `max_bytes` (but appending at least one frame when one is available).
    ///
    /// An incomplete last frame is waited for, unless the MANIFEST already lists a later
    /// segment (the engine restarted: the tail is skipped, as recovery does). Frames covered
    /// by a snapshot or already returned are skipped. A replaced directory, or frames missing
    /// that no snapshot covers, is reported as `diverged`, and so is every later poll.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] for a frame with a bad CRC (corruption: it is never skipped) or one
    /// that does not decode (frames and a snapshot found before it are returned first, with
    /// `more` set, and the next poll fails); [`Error::DataDir`] for a legacy entry, a
    /// vanished MANIFEST, or files that keep vanishing; [`Error::Io`] when a file cannot be
    /// read.
    pub fn poll(&mut self, out: &mut Vec<u8>, max_bytes: usize) -> Result<Poll> {
        let mut poll = Poll::default();
        if self.diverged || self.replaced()? {
            self.diverged = true;
            poll.diverged = true;
            return Ok(poll);
        }
        poll.snapshot = self.refresh()?;
        let mut next = self.next_seq;
        let mut batch: Option<Batch> = None;
        let mut stopped = None;
        let walked = self.walk(|fr, bytes| {
            if fr.seq < next {
                return Action::Next;
            }
            if fr.seq > next {
                stopped = Some(Stopped::Ahead(fr.seq));
                return Action::Stop;
            }
            if batch.is_some() && out.len() + bytes.len() > max_bytes {
                stopped = Some(Stopped::Budget);
                return Action::Stop;
            }
            out.extend_from_slice(bytes);
            let b = batch.get_or_insert(Batch {
                frames: 0,
                first_seq: fr.seq,
                last_seq: fr.seq,
                first_ts: fr.timestamp,
                last_ts: fr.timestamp,
                last_crc: fr.crc,
            });
            b.frames += 1;
            b.last_seq = fr.seq;
            b.last_ts = fr.timestamp;
            b.last_crc = fr.crc;
            next += 1;
            Action::Next
        });
        self.window.trim();
        self.next_seq = next;
        let mut failed = walked.err();
        if failed.is_some() {
            // Not every frame was seen: no gap can be told.
            stopped = Some(Stopped::Budget);
        }
        poll.batch = batch;
        let covered = self.covered();
        match stopped {
            Some(Stopped::Budget) => poll.more = true,
            Some(Stopped::Ahead(seq)) if covered >= next && seq <= covered + 1 => {
                failed = self.gap(&mut poll).err();
            }
            Some(Stopped::Ahead(seq)) => {
                tracing::debug!(
                    expected = next,
                    found = seq,
                    "a frame no snapshot covers is missing"
                );
                self.diverged = true;
                poll.diverged = true;
            }
            None if covered >= next => failed = self.gap(&mut poll).err(),
            None => {}
        }
        if let Some(e) = failed {
            if poll.batch.is_none() && poll.snapshot.is_none() {
                return Err(e);
            }
            // What was found before the failure is returned; the next poll reports it.
            tracing::debug!(error = %e, "stopping before what cannot be read");
            poll.more = true;
        }
        Ok(poll)
    }

    /// Sequence number of the next frame [`poll`](Self::poll) will return.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes of the open segments beyond the position (from their sizes when last looked
    /// at): an estimate of what is not returned yet.
    pub fn pending_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.size.saturating_sub(s.pos.max(4)))
            .sum()
    }

    /// `last_wal_seq` of the snapshot the MANIFEST names (0 without one).
    fn covered(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.last_wal_seq)
    }

    /// Whether the path no longer leads to the directory followed.
    fn replaced(&self) -> Result<bool> {
        match fs::metadata(&self.path) {
            Ok(m) => Ok((m.dev(), m.ino()) != self.dir_id),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e).at(&self.path)?,
        }
    }

    /// Reports a gap covered by the current snapshot and moves past it.
    fn gap(&mut self, poll: &mut Poll) -> Result<()> {
        let seen = self.reopen_snapshot()?;
        tracing::debug!(
            expected = self.next_seq,
            snapshot = %seen.name,
            last_wal_seq = seen.last_wal_seq,
            "frames compacted away before they were read: a snapshot covers them"
        );
        self.next_seq = seen.last_wal_seq + 1;
        poll.gap = Some(seen);
        Ok(())
    }

    /// Opens a file of the directory without following symlinks.
    fn open_in(&self, name: &str) -> io::Result<File> {
        rustix::fs::openat(
            &self.dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(io::Error::from)
    }

    /// Opens a file the MANIFEST names; `None` when it vanished.
    fn open_named(&self, name: &str) -> Result<Option<(File, fs::Metadata)>> {
        crate::capture::open_regular(self.open_in(name), &self.path.join(name))
    }

    /// The current snapshot, opened again by name (or, if that is another file now or none,
    /// its kept descriptor once more).
    fn reopen_snapshot(&self) -> Result<SnapshotSeen> {
        let cur = self
            .snapshot
            .as_ref()
            .expect("a gap is only reported under a snapshot");
        let file = match self.open_named(&cur.name)? {
            Some((f, m)) if (m.dev(), m.ino()) == cur.id => f,
            _ => {
                let path = self.path.join(&cur.name);
                let mut f = cur.file.try_clone().at(&path)?;
                f.rewind().at(&path)?;
                f
            }
        };
        Ok(SnapshotSeen {
            name: cur.name.clone(),
            timestamp: cur.timestamp,
            last_wal_seq: cur.last_wal_seq,
            file,
        })
    }

    /// Reads the MANIFEST and opens what it names that is not open yet, reading it again when
    /// a file vanished first.
    fn refresh(&mut self) -> Result<Option<SnapshotSeen>> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if let Refreshed::Ready(seen) = self.try_refresh()? {
                return Ok(seen);
            }
            if attempts >= MAX_CAPTURE_ATTEMPTS {
                return Err(Error::DataDir(format!(
                    "files named by {}/MANIFEST vanished {attempts} times in a row while \
                     opening them",
                    self.path.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20 * u64::from(attempts)));
        }
    }

    fn try_refresh(&mut self) -> Result<Refreshed> {
        let mut file = match self.open_in("MANIFEST") {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::DataDir(format!(
                    "{} has no MANIFEST: not a KyroDB data directory",
                    self.path.display()
                )))
            }
            Err(e) => return Err(io_error(&self.path, "MANIFEST", e)),
        };
        self.read_buf.clear();
        file.read_to_end(&mut self.read_buf)
            .map_err(|e| io_error(&self.path, "MANIFEST", e))?;
        if self.legacy || self.read_buf != self.manifest {
            let m = DataDirManifest::parse(&self.read_buf).map_err(|e| e.in_file("MANIFEST"))?;
            self.legacy = matches!(m, DataDirManifest::Legacy { .. });
            let listing = if self.legacy {
                list_dir(&self.path)?
            } else {
                Vec::new()
            };
            self.listed = m.wal_segments(&listing);
            self.named = m.snapshot_file().map(|n| (n, m.latest_snapshot_wal_seq()));
            std::mem::swap(&mut self.manifest, &mut self.read_buf);
            let listed = &self.listed;
            self.finished.retain(|n| listed.contains(n));
            self.missing.clear();
            self.check_named = true;
        }
        // Segments first: a snapshot opened here is reported, so nothing may fail after it.
        if !self.open_listed()? {
            return Ok(Refreshed::Vanished);
        }
        self.open_snapshot()
    }

    /// Opens the listed segments not open yet; `false` when one vanished (read the MANIFEST
    /// again).
    fn open_listed(&mut self) -> Result<bool> {
        for i in 0..self.listed.len() {
            let name = &self.listed[i];
            if self.finished.contains(name) || self.segments.iter().any(|s| &s.name == name) {
                continue;
            }
            let Some((file, meta)) = self.open_named(name)? else {
                // Missing at an earlier read of this same MANIFEST, which is still current: it
                // was deleted while this MANIFEST was current, which the engine does only to
                // segments the snapshot it names covers (a compaction, before the MANIFEST is
                // rewritten without them, which can take long under load). A gap, not a
                // reason to wait. The newest segment is never compacted.
                let compacted = self.named.is_some()
                    && i + 1 < self.listed.len()
                    && self.missing.contains(name);
                if compacted {
                    tracing::debug!(
                        segment = %name,
                        "a listed segment was compacted away before it was opened"
                    );
                    self.finished.push(name.clone());
                    continue;
                }
                tracing::debug!(
                    segment = %name,
                    "a listed segment vanished; reading the MANIFEST again"
                );
                self.missing.push(name.clone());
                return Ok(false);
            };
            self.segments.push(Segment {
                name: name.clone(),
                file,
                key: self.next_key,
                pos: 0,
                size: meta.len(),
            });
            self.next_key += 1;
        }
        Ok(true)
    }

    /// Opens the snapshot the MANIFEST names when it is another one than the current.
    fn open_snapshot(&mut self) -> Result<Refreshed> {
        let Some((name, recorded)) = &self.named else {
            self.check_named = false;
            return Ok(Refreshed::Ready(None));
        };
        let current = self.snapshot.as_ref().filter(|s| &s.name == name);
        if current.is_some() && !self.check_named {
            return Ok(Refreshed::Ready(None));
        }
        let Some((file, meta)) = self.open_named(name)? else {
            return Ok(Refreshed::Vanished);
        };
        let id = (meta.dev(), meta.ino());
        if let Some(cur) = current {
            if cur.id == id && recorded.is_none_or(|r| r == cur.last_wal_seq) {
                self.check_named = false;
                return Ok(Refreshed::Ready(None));
            }
            tracing::debug!(
                snapshot = %name,
                "another snapshot was renamed over the one the MANIFEST named"
            );
        }
        let Some((kept, kept_meta)) = self.open_named(name)? else {
            return Ok(Refreshed::Vanished);
        };
        if (kept_meta.dev(), kept_meta.ino()) != id {
            // Renamed over between the two opens: look again.
            return Ok(Refreshed::Vanished);
        }
        let (timestamp, last_wal_seq) = snapshot_facts(&file, meta.len(), name, *recorded)?;
        tracing::debug!(
            snapshot = %name,
            timestamp,
            last_wal_seq,
            "the MANIFEST names a snapshot"
        );
        self.snapshot = Some(Current {
            name: name.clone(),
            timestamp,
            last_wal_seq,
            id,
            file: kept,
        });
        self.check_named = false;
        Ok(Refreshed::Ready(Some(SnapshotSeen {
            name: name.clone(),
            timestamp,
            last_wal_seq,
            file,
        })))
    }

    /// Whether the MANIFEST lists a segment after the `i`th open one (always, for one it no
    /// longer lists: the engine only deletes segments before the newest).
    fn later_listed(&self, i: usize) -> bool {
        let name = &self.segments[i].name;
        self.listed
            .iter()
            .position(|n| n == name)
            .is_none_or(|k| k + 1 < self.listed.len())
    }

    /// Shows the whole frames of the open segments, in order from their positions, to
    /// `visit`. A segment read to its end (or to a torn tail) is closed when a later one is
    /// listed; a torn tail of the newest segment ends the walk.
    fn walk(&mut self, mut visit: impl FnMut(&FrameMeta, &[u8]) -> Action) -> Result<()> {
        let mut i = 0;
        while i < self.segments.len() {
            let later = self.later_listed(i);
            let seg = &mut self.segments[i];
            seg.size = seg
                .file
                .metadata()
                .map_err(|e| io_error(&self.path, &seg.name, e))?
                .len();
            let close = loop {
                match read_frame(&mut self.window, seg, &self.path)? {
                    Next::Frame(meta, bytes) => match visit(&meta, bytes) {
                        Action::Next => seg.pos += meta.len,
                        Action::Last => {
                            seg.pos += meta.len;
                            return Ok(());
                        }
                        Action::Stop => return Ok(()),
                    },
                    Next::End if !later => break false,
                    Next::Torn if !later => return Ok(()),
                    Next::End | Next::Torn => break true,
                }
            };
            if close {
                let seg = self.segments.remove(i);
                tracing::debug!(
                    segment = %seg.name,
                    end = seg.pos,
                    size = seg.size,
                    "segment read to its end"
                );
                if self.listed.contains(&seg.name) {
                    self.finished.push(seg.name);
                }
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

/// The snapshot's timestamp and `last_wal_seq` (read from the file when not `recorded`).
fn snapshot_facts(file: &File, len: u64, name: &str, recorded: Option<u64>) -> Result<(u64, u64)> {
    let capacity = if recorded.is_some() { 4096 } else { 1 << 20 };
    let mut rd = SnapshotReader::new(BufReader::with_capacity(
        capacity,
        PrefixReader::new(file, len),
    ))
    .map_err(|e| e.in_file(name))?;
    let timestamp = rd.header().timestamp;
    let last_wal_seq = if let Some(s) = recorded {
        s
    } else {
        while rd
            .next_document_id()
            .map_err(|e| e.in_file(name))?
            .is_some()
        {}
        rd.finish().map_err(|e| e.in_file(name))?.last_wal_seq
    };
    Ok((timestamp, last_wal_seq))
}

impl Window {
    /// Bytes `[at, at + n)` of the segment, when its length holds them.
    fn get(&mut self, seg: &Segment, at: u64, n: u64, dir: &Path) -> Result<Option<&[u8]>> {
        let end = at + n;
        if end > seg.size {
            return Ok(None);
        }
        let have =
            self.key == seg.key && at >= self.start && end <= self.start + self.buf.len() as u64;
        if !have {
            let want = (seg.size - at).min(n.max(CHUNK));
            self.key = 0;
            self.buf.resize(want as usize, 0);
            seg.file.read_exact_at(&mut self.buf, at).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::DataDir(format!(
                        "{} shrank while being read",
                        dir.join(&seg.name).display()
                    ))
                } else {
                    io_error(dir, &seg.name, e)
                }
            })?;
            self.key = seg.key;
            self.start = at;
        }
        let off = (at - self.start) as usize;
        Ok(Some(&self.buf[off..off + n as usize]))
    }

    /// Lets go of a buffer grown for a large frame.
    fn trim(&mut self) {
        if self.buf.capacity() as u64 > 4 * CHUNK {
            self.key = 0;
            self.buf = Vec::new();
        }
    }
}

/// The frame at the segment's position (checking the magic first, at offset 0).
fn read_frame<'a>(window: &'a mut Window, seg: &mut Segment, dir: &Path) -> Result<Next<'a>> {
    if seg.pos == 0 {
        let Some(m) = window.get(seg, 0, 4, dir)? else {
            return Ok(Next::Torn);
        };
        let found = u32::from_le_bytes(m.try_into().expect("4 bytes"));
        if found != WAL_MAGIC {
            return Err(FormatError::BadMagic {
                what: "WAL segment",
                expected: WAL_MAGIC,
                found,
            }
            .in_file(&seg.name)
            .into());
        }
        seg.pos = 4;
    }
    let pos = seg.pos;
    if pos >= seg.size {
        return Ok(Next::End);
    }
    let Some(h) = window.get(seg, pos, 4, dir)? else {
        return Ok(Next::Torn);
    };
    let len = u32::from_le_bytes(h.try_into().expect("4 bytes"));
    if len == 0 || len > MAX_WAL_ENTRY {
        return Err(FormatError::Malformed {
            what: "WAL frame",
            offset: pos,
            detail: format!("entry length {len} is outside 1..=100 MiB"),
        }
        .in_file(&seg.name)
        .into());
    }
    let total = 8 + u64::from(len);
    let Some(bytes) = window.get(seg, pos, total, dir)? else {
        return Ok(Next::Torn);
    };
    let magic = WAL_MAGIC.to_le_bytes();
    let frame = WalReader::new(magic.as_slice().chain(bytes))
        .and_then(|mut r| r.next_frame())
        .map_err(|e| rebase(e, pos).in_file(&seg.name))?
        .ok_or_else(|| {
            FormatError::Truncated {
                what: "WAL frame",
                offset: pos,
            }
            .in_file(&seg.name)
        })?;
    if frame.layout != WalLayout::W3 || frame.entry.seq_no == 0 {
        return Err(Error::DataDir(format!(
            "{}: the WAL entry at offset {pos} has no sequence number (a legacy layout); only \
             WAL entries with sequence numbers can be followed",
            seg.name
        )));
    }
    let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    Ok(Next::Frame(
        FrameMeta {
            len: total,
            seq: frame.entry.seq_no,
            timestamp: frame.entry.timestamp,
            crc,
        },
        bytes,
    ))
}

/// An i/o error on the file `name` of the directory.
fn io_error(dir: &Path, name: &str, source: io::Error) -> Error {
    Error::from(kyrodb_backup_durable::Error::Io {
        path: dir.join(name),
        source,
    })
}

/// Moves the offset of an error found decoding one frame (read as if at offset 4) to the
/// frame's offset in its segment.
fn rebase(e: FormatError, pos: u64) -> FormatError {
    let at = |offset: u64| offset.saturating_sub(4) + pos;
    match e {
        FormatError::Checksum {
            what,
            offset,
            stored,
            computed,
        } => FormatError::Checksum {
            what,
            offset: at(offset),
            stored,
            computed,
        },
        FormatError::Malformed {
            what,
            offset,
            detail,
        } => FormatError::Malformed {
            what,
            offset: at(offset),
            detail,
        },
        e => e,
    }
}
