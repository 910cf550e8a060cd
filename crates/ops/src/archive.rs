//! `archive`: follows a live data dir and stores every WAL frame the engine writes, and every
//! snapshot it takes, so that every second since it started restores exactly.
//!
//! The loop reads what the engine appended (`kyrodb-backup-datadir`'s follower), stores it as
//! one piece per interval at most (none while idle), and hands bases (the engine's snapshots)
//! and merges (many small pieces into one larger) to a worker thread, so neither holds up the
//! frames. A heartbeat record says, every few seconds, up to which frame and second the archive
//! is complete: `check` reads it, and it proves the last seconds restorable while idle.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access::RepoRef;
use kyrodb_backup_datadir::capture::PrefixReader;
use kyrodb_backup_datadir::follow::{Follower, Resume, SnapshotSeen, Start};
use kyrodb_backup_format::engine::{DataDirManifest, SnapshotReader};
use kyrodb_backup_format::repo::{
    BackupManifest, BackupType, BaseName, FileKind, PieceName, SnapshotSummary, TimelineId,
};
use kyrodb_backup_storage::{
    lease_for_archive, lease_for_create, wait_for_prune, ArchivedTimeline, NoProgress,
    ObservedRecord, Repository, StoreStats, PRUNE_WAIT,
};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Now;

/// Where long-running commands read the time from: the caller's clock, so tests pin it.
pub trait Clock: Send + Sync {
    /// The current moment.
    fn now(&self) -> Now;
}

/// What `archive` is asked to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ArchiveOptions {
    /// The live data directory to follow.
    pub data_dir: PathBuf,
    /// At most one piece per interval while the engine writes; every frame is stored within
    /// about this long of being written.
    pub interval: Duration,
    /// How often the archiver says it is alive and up to where it is complete (also while
    /// idle).
    pub heartbeat: Duration,
    /// Frames per piece at most, in bytes.
    pub max_piece: usize,
    /// How many consecutive pieces of one level are merged into one of the next level.
    pub merge_fan_in: usize,
    /// How often the worker looks for pieces to merge.
    pub merge_every: Duration,
    /// This host's name, recorded in the heartbeat.
    pub host: String,
}

impl ArchiveOptions {
    /// Follows `data_dir` with the defaults: 1 s interval, 10 s heartbeat, pieces up to
    /// 8 MiB, 60 pieces merged into one, merges looked for every minute.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            interval: Duration::from_secs(1),
            heartbeat: Duration::from_secs(10),
            max_piece: 8 << 20,
            merge_fan_in: 60,
            merge_every: Duration::from_secs(60),
            host: String::new(),
        }
    }
}

/// Seconds of a timeline that cannot be restored exactly: frames the engine compacted away
/// while no archiver followed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveGap {
    /// The timeline.
    pub timeline: String,
    /// First second not restorable.
    pub from: u64,
    /// Last second not restorable.
    pub to: u64,
    /// The last frame archived before the gap.
    pub after_seq: u64,
    /// The snapshot the history resumes from (its last frame).
    pub resumes_after_seq: u64,
}

/// How the archiver stands, as the heartbeat reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveStatus {
    /// The timeline written to.
    pub timeline: String,
    /// The last frame stored.
    pub last_seq: u64,
    /// Every later frame is at or after this second.
    pub observed_at: u64,
    /// Age in seconds of the oldest frame read but not yet stored (0: none).
    pub lag_seconds: u64,
    /// Bytes of WAL in the data dir not yet stored.
    pub pending_bytes: u64,
    /// The first gap this run found, if any.
    pub first_gap: Option<ArchiveGap>,
    /// Pieces stored by this run.
    pub pieces: u64,
    /// Frames stored by this run.
    pub frames: u64,
    /// Bytes of frames stored by this run.
    pub bytes: u64,
    /// Bases stored by this run.
    pub bases: u64,
    /// Merges done by this run.
    pub merges: u64,
    /// Requests made to the repository's store by this run.
    pub requests: u64,
}

/// Something the archiver did or met, in the order it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ArchiveEvent {
    /// It writes to this timeline from now on.
    Timeline {
        /// The timeline.
        timeline: String,
        /// `new` (no archive yet), `resumed` (the data dir continues it), or `diverged` (the
        /// data dir's history is another one: a restore into it, another database).
        reason: String,
        /// The next frame it stores.
        next_seq: u64,
    },
    /// Frames it could not see (compacted away while no archiver ran).
    Gap(ArchiveGap),
    /// A base stored.
    Base {
        /// The timeline.
        timeline: String,
        /// The snapshot.
        snapshot: String,
        /// Its last WAL frame.
        last_wal_seq: u64,
        /// Bytes it added to the repository.
        stored_bytes: u64,
        /// Seconds it took.
        seconds: f64,
    },
    /// Small pieces merged into one.
    Merged {
        /// The timeline.
        timeline: String,
        /// How many pieces.
        pieces: usize,
        /// The piece written.
        into: String,
    },
    /// The heartbeat.
    Status(ArchiveStatus),
    /// A failure it retries (the store unreachable, say).
    Warning {
        /// What failed.
        message: String,
    },
}

/// What `archive` did before it was stopped.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    /// The timelines it wrote to.
    pub timelines: Vec<String>,
    /// Its last status.
    #[serde(flatten)]
    pub status: ArchiveStatus,
    /// Every gap it found.
    pub gaps: Vec<ArchiveGap>,
}

/// The largest piece a merge writes: merging holds it in memory.
const MERGE_LIMIT: u64 = 32 << 20;

fn requests(backend: &dyn kyrodb_backup_storage::backend::Backend) -> u64 {
    backend.requests().iter().map(|(_, n)| n).sum()
}

enum Job {
    Base(TimelineId, SnapshotSeen),
    Merge(TimelineId),
}

/// The frames read but not stored yet, and what they are.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    first_seq: u64,
    last_seq: u64,
    first_ts: u64,
    last_ts: u64,
    last_crc: u32,
    /// Every frame after `last_seq` is at or after this second.
    observed_at: u64,
}

/// The timeline being written and where it stands.
struct Current {
    tl: TimelineId,
    last_seq: u64,
    last_crc: u32,
    observed_at: u64,
}

/// Follows `opts.data_dir` and archives it into `backup_dir` (made if missing) until `stop` is
/// set; then stores what it read, writes a last heartbeat, and returns. One archiver per
/// repository: a second one is refused while the first runs.
///
/// # Errors
///
/// [`Error::Locked`] when another archiver runs; data dir errors (a corrupt frame, a legacy
/// WAL); a lease that lapsed. A store that fails is retried (reported as warnings), not an
/// error.
pub fn archive(
    backup_dir: impl Into<RepoRef>,
    opts: &ArchiveOptions,
    clock: &dyn Clock,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&ArchiveEvent),
) -> Result<ArchiveReport> {
    let location = backup_dir.into();
    let repo = Arc::new(location.open_or_init()?);
    let backend = Arc::clone(repo.backend());
    wait_for_prune(&backend, clock.now().secs, PRUNE_WAIT)?;
    let lease = lease_for_archive(&backend, clock.now().secs)?;
    let (jobs, job_rx) = mpsc::channel::<Job>();
    let (events, event_rx) = mpsc::channel::<ArchiveEvent>();
    let worker_stop = Arc::new(AtomicBool::new(false));
    let mut run = Run {
        repo: Arc::clone(&repo),
        opts,
        clock,
        status: ArchiveStatus::default(),
        timelines: Vec::new(),
        gaps: Vec::new(),
        jobs,
        requests_at_start: requests(&*backend),
        unstored: std::collections::VecDeque::new(),
        awaiting_base: None,
        inflight_bytes: 0,
    };
    let worker = {
        let repo = Arc::clone(&repo);
        let opts = opts.clone();
        let data_dir = opts.data_dir.clone();
        let stop = Arc::clone(&worker_stop);
        let now = clock.now().secs;
        std::thread::Builder::new()
            .name("kyrodb-backup-archive-worker".into())
            .spawn(move || worker(&repo, &opts, &job_rx, &events, &stop, now))
            .map_err(|e| Error::Io {
                path: data_dir,
                source: e,
            })?
    };
    let result = run.follow(stop, &lease, &event_rx, on_event);
    worker_stop.store(true, Ordering::Relaxed);
    // Dropping the sender lets the worker finish what is queued and return.
    run.jobs = mpsc::channel().0;
    let _ = worker.join();
    for e in event_rx.try_iter() {
        run.note(&e);
        on_event(&e);
    }
    drop(lease);
    result?;
    run.status.requests = requests(&*backend) - run.requests_at_start;
    Ok(ArchiveReport {
        timelines: run.timelines,
        status: run.status,
        gaps: run.gaps,
    })
}

struct Run<'a> {
    repo: Arc<Repository>,
    opts: &'a ArchiveOptions,
    clock: &'a dyn Clock,
    status: ArchiveStatus,
    timelines: Vec<String>,
    gaps: Vec<ArchiveGap>,
    jobs: mpsc::Sender<Job>,
    requests_at_start: u64,
    /// First timestamps of the pieces handed to the uploader and not stored yet, in order.
    unstored: std::collections::VecDeque<u64>,
    /// Bytes of those pieces.
    inflight_bytes: u64,
    /// A base that frames after it wait for (timeline, its last WAL seq).
    awaiting_base: Option<(TimelineId, u64)>,
}

impl Run<'_> {
    fn note(&mut self, e: &ArchiveEvent) {
        match e {
            ArchiveEvent::Base { .. } => self.status.bases += 1,
            ArchiveEvent::Merged { .. } => self.status.merges += 1,
            ArchiveEvent::Gap(g) => {
                self.gaps.push(g.clone());
                self.status.first_gap.get_or_insert_with(|| g.clone());
            }
            _ => {}
        }
    }

    fn emit(&mut self, e: &ArchiveEvent, on_event: &mut dyn FnMut(&ArchiveEvent)) {
        self.note(e);
        on_event(e);
    }

    /// Decides which timeline the data dir continues (or starts a new one) and opens the
    /// follower there.
    fn begin(&mut self, on_event: &mut dyn FnMut(&ArchiveEvent)) -> Result<(Follower, Current)> {
        let dir = &self.opts.data_dir;
        let timelines = self.repo.archive_timelines()?;
        if let Some(tl) = timelines.last() {
            if let Some(resume) = self.resume_point(tl)? {
                let (follower, start) = Follower::start(dir, Some(resume))?;
                let current = Current {
                    tl: tl.id,
                    last_seq: resume.seq,
                    last_crc: resume.crc,
                    observed_at: tl.observed_at(),
                };
                match start {
                    Start::Continues => {
                        self.started(tl.id, "resumed", follower.next_seq(), on_event);
                        return Ok((follower, current));
                    }
                    Start::Gap { snapshot } => {
                        self.started(tl.id, "resumed", follower.next_seq(), on_event);
                        self.gap(&current, &snapshot, on_event);
                        self.base_first(tl.id, snapshot);
                        return Ok((follower, current));
                    }
                    Start::Diverged | Start::Fresh { .. } => {
                        return self.new_timeline("diverged", on_event);
                    }
                }
            }
        }
        self.new_timeline("new", on_event)
    }

    /// The last frame a timeline holds, with its CRC: from the heartbeat when it is current,
    /// else from the newest piece.
    fn resume_point(&self, tl: &ArchivedTimeline) -> Result<Option<Resume>> {
        let Some(newest) = tl.pieces.iter().max_by_key(|p| p.name.last_seq) else {
            return Ok(None);
        };
        if let Some(o) = tl
            .observed
            .as_ref()
            .filter(|o| o.last_seq == newest.name.last_seq)
        {
            return Ok(Some(Resume {
                seq: o.last_seq,
                crc: o.last_crc,
            }));
        }
        let piece = self.repo.read_piece(&newest.key, &newest.name)?;
        Ok(Some(Resume {
            seq: newest.name.last_seq,
            crc: piece.last_crc,
        }))
    }

    fn new_timeline(
        &mut self,
        reason: &str,
        on_event: &mut dyn FnMut(&ArchiveEvent),
    ) -> Result<(Follower, Current)> {
        let (follower, start) = Follower::start(&self.opts.data_dir, None)?;
        let now = self.clock.now();
        let tl = TimelineId {
            started_at: now.secs,
            tag: uuid::Uuid::new_v4().as_fields().0,
        };
        if let Start::Fresh {
            snapshot: Some(snapshot),
        } = start
        {
            self.base_first(tl, snapshot);
        }
        self.started(tl, reason, follower.next_seq(), on_event);
        let current = Current {
            tl,
            last_seq: follower.next_seq().saturating_sub(1),
            last_crc: 0,
            observed_at: 0,
        };
        Ok((follower, current))
    }

    fn started(
        &mut self,
        tl: TimelineId,
        reason: &str,
        next_seq: u64,
        on_event: &mut dyn FnMut(&ArchiveEvent),
    ) {
        self.timelines.push(tl.to_string());
        self.status.timeline = tl.to_string();
        self.emit(
            &ArchiveEvent::Timeline {
                timeline: tl.to_string(),
                reason: reason.into(),
                next_seq,
            },
            on_event,
        );
    }

    /// Hands a snapshot to the worker as a base that the frames after it wait for.
    fn base_first(&mut self, tl: TimelineId, snapshot: SnapshotSeen) {
        self.awaiting_base = Some((tl, snapshot.last_wal_seq));
        let _ = self.jobs.send(Job::Base(tl, snapshot));
    }

    /// Reports the seconds between the last second the archive proves complete and the
    /// snapshot the history resumes from.
    fn gap(
        &mut self,
        current: &Current,
        snapshot: &SnapshotSeen,
        on_event: &mut dyn FnMut(&ArchiveEvent),
    ) {
        let from = current.observed_at;
        let to = snapshot.timestamp.saturating_sub(1);
        if from <= to {
            self.emit(
                &ArchiveEvent::Gap(ArchiveGap {
                    timeline: current.tl.to_string(),
                    from,
                    to,
                    after_seq: current.last_seq,
                    resumes_after_seq: snapshot.last_wal_seq,
                }),
                on_event,
            );
        }
    }

    fn follow(
        &mut self,
        stop: &AtomicBool,
        lease: &kyrodb_backup_storage::Lease,
        event_rx: &mpsc::Receiver<ArchiveEvent>,
        on_event: &mut dyn FnMut(&ArchiveEvent),
    ) -> Result<()> {
        let (up_tx, up_rx) = mpsc::channel::<Upload>();
        let (done_tx, done_rx) = mpsc::channel::<Uploaded>();
        let abandon = Arc::new(AtomicBool::new(false));
        let uploader = {
            let (repo, abandon) = (Arc::clone(&self.repo), Arc::clone(&abandon));
            std::thread::Builder::new()
                .name("kyrodb-backup-archive-uploader".into())
                .spawn(move || uploader(&repo, &up_rx, &done_tx, &abandon))
                .map_err(|e| Error::Io {
                    path: self.opts.data_dir.clone(),
                    source: e,
                })?
        };
        let result = self.follow_loop(stop, lease, event_rx, &up_tx, &done_rx, &abandon, on_event);
        drop(up_tx);
        abandon.store(true, Ordering::Relaxed);
        let _ = uploader.join();
        result
    }

    /// Reads what the engine appends, seals it into pieces (at most one per interval) for the
    /// uploader, which stores them in order, retrying, while reading goes on: an outage of
    /// the store does not stop the follower from holding and reading the segments, so the
    /// engine's compaction cannot take frames from under it (up to a bounded backlog).
    #[allow(clippy::too_many_arguments, clippy::too_many_lines)]
    fn follow_loop(
        &mut self,
        stop: &AtomicBool,
        lease: &kyrodb_backup_storage::Lease,
        event_rx: &mpsc::Receiver<ArchiveEvent>,
        up: &mpsc::Sender<Upload>,
        done: &mpsc::Receiver<Uploaded>,
        abandon: &AtomicBool,
        on_event: &mut dyn FnMut(&ArchiveEvent),
    ) -> Result<()> {
        let (mut follower, mut current) = self.begin(on_event)?;
        let mut pending = Pending::default();
        let tick =
            (self.opts.interval / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        // Read frames wait in memory for the uploader up to this much (then reading pauses).
        let backlog = 2 * self.opts.max_piece as u64;
        let mut last_seal = Instant::now();
        let mut last_beat: Option<Instant> = None;
        let mut last_merge = Instant::now();
        let mut merged_at = 0u64;
        let mut last_warning: Option<(String, Instant)> = None;
        let mut quiet_at = 0u64;
        let mut stopping_since: Option<Instant> = None;
        loop {
            for d in done.try_iter() {
                match d {
                    Uploaded::Piece { name, bytes } => {
                        self.status.pieces += 1;
                        self.status.frames += name.last_seq - name.first_seq + 1;
                        self.status.bytes += bytes as u64;
                        self.inflight_bytes -= bytes as u64;
                        self.unstored.pop_front();
                    }
                    Uploaded::Failed(message) => {
                        // One warning per distinct failure, and again every minute it lasts.
                        let repeat = last_warning.as_ref().is_some_and(|(m, at)| {
                            *m == message && at.elapsed() < Duration::from_secs(60)
                        });
                        if !repeat {
                            self.emit(
                                &ArchiveEvent::Warning {
                                    message: message.clone(),
                                },
                                on_event,
                            );
                            last_warning = Some((message, Instant::now()));
                        }
                    }
                }
            }
            for e in event_rx.try_iter() {
                if let ArchiveEvent::Base {
                    timeline,
                    last_wal_seq,
                    ..
                } = &e
                {
                    let done = self.awaiting_base.is_some_and(|(tl, seq)| {
                        tl.to_string() == *timeline && *last_wal_seq >= seq
                    });
                    if done {
                        self.awaiting_base = None;
                    }
                }
                self.emit(&e, on_event);
            }
            lease.check()?;
            let stopping = stop.load(Ordering::Relaxed);
            let read_at = self.clock.now().secs;
            let room = self.opts.max_piece.saturating_sub(pending.bytes.len());
            let mut more = false;
            if room > 0 && self.inflight_bytes < backlog && stopping_since.is_none() {
                let mut out = std::mem::take(&mut pending.bytes);
                let poll = follower.poll(&mut out, self.opts.max_piece);
                pending.bytes = out;
                let poll = poll?;
                if let Some(b) = &poll.batch {
                    if pending.first_seq == 0 {
                        pending.first_seq = b.first_seq;
                        pending.first_ts = b.first_ts;
                    }
                    pending.first_ts = pending.first_ts.min(b.first_ts);
                    pending.last_seq = b.last_seq;
                    pending.last_ts = pending.last_ts.max(b.last_ts);
                    pending.last_crc = b.last_crc;
                }
                if poll.diverged {
                    // The old history as far as the last poll that saw it, then the new one.
                    self.seal(&mut pending, &mut current, up);
                    current.observed_at = current.observed_at.max(quiet_at);
                    self.beat(&follower, &current, &pending, up, on_event);
                    let (f, c) = self.begin(on_event)?;
                    (follower, current) = (f, c);
                    quiet_at = 0;
                    continue;
                }
                more = poll.more;
                // Everything the engine had appended when this poll started was read (the
                // sizes the poll saw, after it started, hold nothing unread). A frame still
                // half written, a follower that fell behind, or a gap (frames compacted away,
                // never read) proves nothing.
                if !more && poll.gap.is_none() && follower.pending_bytes() == 0 {
                    quiet_at = read_at.saturating_sub(1);
                }
                pending.observed_at = pending.last_ts.max(quiet_at);
                if let Some(snapshot) = poll.gap {
                    // Frames before the gap and after it never share a piece.
                    self.seal(&mut pending, &mut current, up);
                    self.gap(&current, &snapshot, on_event);
                    current.last_seq = snapshot.last_wal_seq;
                    current.last_crc = 0;
                    self.base_first(current.tl, snapshot);
                }
                if let Some(snapshot) = poll.snapshot {
                    let _ = self.jobs.send(Job::Base(current.tl, snapshot));
                }
            }
            let due = last_seal.elapsed() >= self.opts.interval
                || more
                || pending.bytes.len() >= self.opts.max_piece
                || stopping;
            // Frames after a gap (or of a new timeline) are stored only once the base they
            // start from is: a run killed before that resumes before the gap and finds it again,
            // instead of leaving frames that nothing can be replayed onto.
            if !pending.bytes.is_empty() && due && self.awaiting_base.is_none() {
                self.seal(&mut pending, &mut current, up);
                last_seal = Instant::now();
            }
            if pending.bytes.is_empty() && !more {
                current.observed_at = current.observed_at.max(quiet_at);
            }
            if last_beat.is_none_or(|b| b.elapsed() >= self.opts.heartbeat)
                || (stopping && stopping_since.is_none())
            {
                self.beat(&follower, &current, &pending, up, on_event);
                last_beat = Some(Instant::now());
            }
            // Merges are looked for only after new pieces: an idle archiver makes no request
            // but its heartbeat.
            if last_merge.elapsed() >= self.opts.merge_every && self.status.pieces > merged_at {
                merged_at = self.status.pieces;
                let _ = self.jobs.send(Job::Merge(current.tl));
                last_merge = Instant::now();
            }
            if stopping {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if self.awaiting_base.is_some() && since.elapsed() > Duration::from_secs(30) {
                    // The frames read stay in the data dir; the next run finds the gap again.
                    self.emit(
                        &ArchiveEvent::Warning {
                            message: "stopping before the base a gap needs was stored: the next run takes it again".into(),
                        },
                        on_event,
                    );
                    return Ok(());
                }
                if self.unstored.is_empty()
                    && (pending.bytes.is_empty() || self.awaiting_base.is_some())
                {
                    if self.awaiting_base.is_some() {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    // Give the last heartbeat a moment to land (it follows the pieces).
                    std::thread::sleep(Duration::from_millis(50));
                    for _ in done.try_iter() {}
                    return Ok(());
                }
                if since.elapsed() > Duration::from_secs(30) {
                    abandon.store(true, Ordering::Relaxed);
                    return Err(Error::Unavailable(format!(
                        "{} bytes of WAL read could not be stored before stopping",
                        self.inflight_bytes
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if !more {
                std::thread::sleep(tick);
            }
        }
    }

    /// Hands the pending frames to the uploader as one piece, and takes them as stored for
    /// what follows (the uploader stores in order and retries until it succeeds).
    fn seal(&mut self, pending: &mut Pending, current: &mut Current, up: &mpsc::Sender<Upload>) {
        if pending.bytes.is_empty() {
            return;
        }
        let name = PieceName {
            first_seq: pending.first_seq,
            last_seq: pending.last_seq,
            first_ts: pending.first_ts,
            last_ts: pending.last_ts,
            observed_at: pending.observed_at.max(pending.last_ts),
            level: 0,
        };
        let frames = std::mem::take(&mut pending.bytes);
        self.inflight_bytes += frames.len() as u64;
        self.unstored.push_back(name.first_ts);
        current.last_seq = name.last_seq;
        current.last_crc = pending.last_crc;
        current.observed_at = current.observed_at.max(name.observed_at);
        let _ = up.send(Upload::Piece {
            tl: current.tl,
            name,
            frames,
        });
        *pending = Pending::default();
    }

    /// The heartbeat: the record `check` reads (queued behind the pieces it describes), and
    /// a status event.
    fn beat(
        &mut self,
        follower: &Follower,
        current: &Current,
        pending: &Pending,
        up: &mpsc::Sender<Upload>,
        on_event: &mut dyn FnMut(&ArchiveEvent),
    ) {
        let now = self.clock.now().secs;
        self.status.last_seq = current.last_seq;
        self.status.observed_at = current.observed_at;
        let oldest = self
            .unstored
            .front()
            .copied()
            .or((!pending.bytes.is_empty()).then_some(pending.first_ts));
        self.status.lag_seconds = oldest.map_or(0, |ts| now.saturating_sub(ts));
        self.status.pending_bytes = follower.pending_bytes() + pending.bytes.len() as u64;
        self.status.requests = requests(self.repo.backend().as_ref()) - self.requests_at_start;
        let rec = ObservedRecord {
            timeline: current.tl.to_string(),
            last_seq: current.last_seq,
            last_crc: current.last_crc,
            observed_at: current.observed_at,
            written_at: now,
            lag_seconds: self.status.lag_seconds,
            pending_bytes: self.status.pending_bytes,
            host: self.opts.host.clone(),
            pid: std::process::id(),
        };
        let _ = up.send(Upload::Heartbeat(current.tl, rec));
        let status = ArchiveEvent::Status(self.status.clone());
        on_event(&status);
    }
}

/// What the uploader is given: a piece, or a heartbeat record.
enum Upload {
    Piece {
        tl: TimelineId,
        name: PieceName,
        frames: Vec<u8>,
    },
    Heartbeat(TimelineId, ObservedRecord),
}

/// What the uploader reports back.
enum Uploaded {
    Piece { name: PieceName, bytes: usize },
    Failed(String),
}

/// Stores what it is given, in order: a piece is retried (backing off, 0.5 s to 8 s) until
/// it is stored or the run gives up; a heartbeat is tried once, and skipped when a newer one
/// waits behind it.
fn uploader(
    repo: &Repository,
    up: &mpsc::Receiver<Upload>,
    done: &mpsc::Sender<Uploaded>,
    abandon: &AtomicBool,
) {
    let mut queue: std::collections::VecDeque<Upload> = std::collections::VecDeque::new();
    loop {
        if queue.is_empty() {
            match up.recv() {
                Ok(u) => queue.push_back(u),
                Err(_) => return,
            }
        }
        queue.extend(up.try_iter());
        let Some(next) = queue.pop_front() else {
            continue;
        };
        match next {
            Upload::Piece { tl, name, frames } => {
                let mut pause = Duration::from_millis(500);
                loop {
                    match repo.write_piece(tl, &name, &frames) {
                        Ok(_) => {
                            let _ = done.send(Uploaded::Piece {
                                name,
                                bytes: frames.len(),
                            });
                            break;
                        }
                        Err(e) => {
                            let _ = done.send(Uploaded::Failed(format!(
                                "cannot store WAL frames yet (kept, retried): {e}"
                            )));
                            if abandon.load(Ordering::Relaxed) {
                                return;
                            }
                            std::thread::sleep(pause);
                            pause = (pause * 2).min(Duration::from_secs(8));
                        }
                    }
                }
            }
            Upload::Heartbeat(tl, rec) => {
                let newer = queue
                    .iter()
                    .any(|u| matches!(u, Upload::Heartbeat(t, _) if *t == tl));
                if !newer {
                    if let Err(e) = repo.write_observed(tl, &rec) {
                        let _ =
                            done.send(Uploaded::Failed(format!("cannot write the heartbeat: {e}")));
                    }
                }
            }
        }
    }
}

/// The worker: stores bases and merges pieces, one job at a time; a base that fails is
/// tried again a little later (the newest snapshot of a timeline wins).
fn worker(
    repo: &Repository,
    opts: &ArchiveOptions,
    jobs: &mpsc::Receiver<Job>,
    events: &mpsc::Sender<ArchiveEvent>,
    stop: &AtomicBool,
    started: u64,
) {
    let mut retry: Option<(TimelineId, SnapshotSeen, Instant)> = None;
    let since = Instant::now();
    loop {
        let job = match jobs.recv_timeout(Duration::from_millis(200)) {
            Ok(j) => Some(j),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if retry.is_none() || stop.load(Ordering::Relaxed) {
                    return;
                }
                None
            }
        };
        let job = match job {
            Some(j) => j,
            None => match retry.take() {
                Some((tl, s, at)) if at.elapsed() >= Duration::from_secs(5) => Job::Base(tl, s),
                other => {
                    retry = other;
                    continue;
                }
            },
        };
        match job {
            Job::Base(tl, snapshot) => {
                let t0 = Instant::now();
                // When the base is taken: the run's start second plus the time since.
                let now = started + since.elapsed().as_secs();
                match store_base(repo, opts, tl, &snapshot, now) {
                    Ok(stored_bytes) => {
                        let _ = events.send(ArchiveEvent::Base {
                            timeline: tl.to_string(),
                            snapshot: snapshot.name.clone(),
                            last_wal_seq: snapshot.last_wal_seq,
                            stored_bytes,
                            seconds: t0.elapsed().as_secs_f64(),
                        });
                    }
                    Err(e) => {
                        let _ = events.send(ArchiveEvent::Warning {
                            message: format!(
                                "cannot store snapshot {} as a base yet (retried): {e}",
                                snapshot.name
                            ),
                        });
                        let newer = retry
                            .as_ref()
                            .is_some_and(|r| r.1.last_wal_seq > snapshot.last_wal_seq);
                        if !newer {
                            retry = Some((tl, snapshot, Instant::now()));
                        }
                    }
                }
            }
            Job::Merge(_) if stop.load(Ordering::Relaxed) => {}
            Job::Merge(tl) => match merge(repo, opts, tl) {
                Ok(merged) => {
                    for (pieces, into) in merged {
                        let _ = events.send(ArchiveEvent::Merged {
                            timeline: tl.to_string(),
                            pieces,
                            into,
                        });
                    }
                }
                Err(e) => {
                    let _ = events.send(ArchiveEvent::Warning {
                        message: format!("cannot merge pieces yet: {e}"),
                    });
                }
            },
        }
    }
}

/// Stores a snapshot as a base of `tl`: its chunks (shared with the timeline's other bases),
/// a MANIFEST naming it, then the base's manifest, create-only, last. Returns the bytes added.
fn store_base(
    repo: &Repository,
    opts: &ArchiveOptions,
    tl: TimelineId,
    snapshot: &SnapshotSeen,
    now: u64,
) -> Result<u64> {
    let id = uuid::Uuid::new_v4().to_string();
    let _lease = lease_for_create(
        repo.backend(),
        &format!("{}/{tl}", kyrodb_backup_storage::ARCHIVE_DIR),
        &id,
        now,
        PRUNE_WAIT,
    )?;
    let store = repo.archive_store(tl);
    let len = snapshot
        .file
        .metadata()
        .map_err(|e| Error::Io {
            path: opts.data_dir.join(&snapshot.name),
            source: e,
        })?
        .len();
    let header = *SnapshotReader::new(PrefixReader::new(&snapshot.file, len))
        .map_err(|e| Error::Format(e.in_file(&snapshot.name)))?
        .header();
    let result = (|| -> Result<u64> {
        let mut stats = StoreStats::default();
        let snap = store.store_file(
            PrefixReader::new(&snapshot.file, len),
            &snapshot.name,
            FileKind::Snapshot,
            &mut stats,
            &NoProgress,
        )?;
        let manifest_bytes = DataDirManifest::modern(
            Some(snapshot.name.clone()),
            Some(snapshot.last_wal_seq),
            Vec::new(),
            snapshot.timestamp,
        )
        .to_bytes();
        let manifest = store.store_file(
            &manifest_bytes[..],
            "MANIFEST",
            FileKind::Manifest,
            &mut stats,
            &NoProgress,
        )?;
        store.sync()?;
        let mut m = BackupManifest::new(id.clone(), id.clone(), now, BackupType::Full);
        m.description = format!("archive base of timeline {tl}");
        m.size_bytes = snap.size + manifest.size;
        m.stored_bytes = stats.stored_bytes;
        m.vector_count = header.doc_count;
        m.dimension = Some(header.dimension);
        m.snapshot = Some(SnapshotSummary {
            file: snapshot.name.clone(),
            version: header.version,
            layout: format!("V{}", header.version),
            timestamp: snapshot.timestamp,
            last_wal_seq: snapshot.last_wal_seq,
            doc_count: header.doc_count,
        });
        m.source = opts.data_dir.display().to_string();
        m.tool_version = env!("CARGO_PKG_VERSION").into();
        m.files = vec![manifest, snap];
        repo.commit_base(
            tl,
            &BaseName {
                last_wal_seq: snapshot.last_wal_seq,
                snapshot_ts: snapshot.timestamp,
                id: id.clone(),
            },
            &m,
        )?;
        Ok(stats.stored_bytes)
    })();
    if result.is_err() {
        store.discard_created();
    }
    result
}

/// Merges runs of `fan_in` consecutive pieces of one level into one piece of the next level
/// (at most [`MERGE_LIMIT`] bytes), and deletes pieces that a larger one covers.
/// Returns (pieces merged, new piece) per merge.
fn merge(repo: &Repository, opts: &ArchiveOptions, tl: TimelineId) -> Result<Vec<(usize, String)>> {
    let fan_in = opts.merge_fan_in.max(2);
    let mut pieces = repo.archive_timeline(tl)?.pieces;
    // Pieces inside a larger one (a merge whose clean-up was cut short) go first.
    let covered: Vec<String> = pieces
        .iter()
        .filter(|p| {
            pieces.iter().any(|q| {
                q.key != p.key
                    && q.name.first_seq <= p.name.first_seq
                    && p.name.last_seq <= q.name.last_seq
                    && (q.name.last_seq - q.name.first_seq > p.name.last_seq - p.name.first_seq
                        || q.name.level > p.name.level)
            })
        })
        .map(|p| p.key.clone())
        .collect();
    if !covered.is_empty() {
        repo.delete_archived(&covered)?;
        pieces.retain(|p| !covered.contains(&p.key));
    }
    let mut done = Vec::new();
    let levels: std::collections::BTreeSet<u8> = pieces.iter().map(|p| p.name.level).collect();
    for level in levels {
        let of_level: Vec<_> = pieces.iter().filter(|p| p.name.level == level).collect();
        let mut i = 0;
        while i < of_level.len() {
            // The longest run of consecutive pieces from i, up to fan_in and the size limit.
            let mut j = i + 1;
            let mut size = of_level[i].size;
            while j < of_level.len()
                && j - i < fan_in
                && of_level[j].name.first_seq == of_level[j - 1].name.last_seq + 1
                && size + of_level[j].size <= MERGE_LIMIT
            {
                size += of_level[j].size;
                j += 1;
            }
            // A run merges when it has `fan_in` pieces, or when the size limit stopped it
            // (a heavy writer's pieces are large: merging fewer of them still bounds the count).
            let full_by_size = j < of_level.len()
                && of_level[j].name.first_seq == of_level[j - 1].name.last_seq + 1
                && size + of_level[j].size > MERGE_LIMIT;
            if j - i < fan_in && !(full_by_size && j - i >= 2) {
                i = j;
                continue;
            }
            let run = &of_level[i..j];
            let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            for p in run {
                body.extend_from_slice(repo.read_piece(&p.key, &p.name)?.body());
            }
            let name = PieceName {
                first_seq: run[0].name.first_seq,
                last_seq: run[run.len() - 1].name.last_seq,
                first_ts: run.iter().map(|p| p.name.first_ts).min().unwrap_or(0),
                last_ts: run.iter().map(|p| p.name.last_ts).max().unwrap_or(0),
                observed_at: run[run.len() - 1].name.observed_at,
                level: level.saturating_add(1),
            };
            let key = repo.write_piece(tl, &name, &body)?;
            let old: Vec<String> = run.iter().map(|p| p.key.clone()).collect();
            repo.delete_archived(&old)?;
            done.push((run.len(), key));
            i = j;
        }
    }
    Ok(done)
}
