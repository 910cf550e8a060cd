//! Incremental chains and point-in-time resolution for `kyrodb_backup`.
//!
//! What it is for: deciding, from the manifests of backups and a target second `T`, which
//! captured bytes rebuild the data directory's state at `T` (every write with a WAL timestamp
//! `<= T`, none after), or proving that nothing can, and naming the seconds that can be rebuilt.
//! It is pure: it reads [`BackupView`]s (what a backup manifest says of its snapshot and WAL),
//! never files, the clock or the environment.
//! What it is not for: reading or writing bytes (the storage crate writes the plan out), or
//! decoding manifests (the caller makes the views).
//!
//! The rule, per chain:
//! - a start is a captured snapshot `S` with `S.timestamp <= T`, or the empty state when WAL
//!   entry 1 was captured; the newest start is taken;
//! - the WAL entries captured by any backup of the chain are pooled by sequence number (a
//!   segment grows between backups and may later be compacted away by the engine);
//! - from the start's `last_wal_seq + 1` the entries must be contiguous up to the last one with
//!   timestamp `<= T`;
//! - `T` is exact when the next captured entry exists and is after `T`, or when the run ends
//!   where some backup's capture ends and that backup was taken at a second greater than `T`.
//!
//! Continuous archives add timelines ([`TimelineView`]): an archiver follows a live data
//! directory and stores its WAL frames in pieces (runs of consecutive frames) and the engine's
//! snapshots as bases. The same rule holds on a timeline, over piece summaries (first and last
//! sequence number, first and last entry timestamp) rather than single entries, with markers of
//! what the archiver had seen (and the pieces themselves) proving where a run ends instead of
//! backup times; [`timeline_windows`] and [`timeline_gaps`] name what a timeline can and cannot
//! rebuild, and [`resolve_all`] and [`recoverable_windows_all`] weigh backup chains and timelines
//! together (the newest start wins, backups on a tie).
//!
//! ```
//! use kyrodb_backup_chain::{resolve, BackupView, PitrOptions, SegmentView, SnapshotView};
//!
//! // A full backup taken at 1000 of a snapshot (taken at 900, after WAL entry 10) and a
//! // segment holding entries 11 and 12, written at 950 and 990.
//! let full = BackupView {
//!     id: "b1".into(),
//!     chain_id: "b1".into(),
//!     timestamp: 1000,
//!     snapshot: Some(SnapshotView { file: "snapshot_900.snap".into(), timestamp: 900, last_wal_seq: 10 }),
//!     segments: vec![SegmentView { name: "wal_1.wal".into(), entries: vec![(11, 950), (12, 990)] }],
//! };
//! let plan = resolve(&[full.clone()], &PitrOptions { target: 960, nearest: false })?;
//! assert_eq!(plan.last_seq, 11);
//! assert!(!plan.segments[0].whole); // cut after entry 11
//! let err = resolve(&[full], &PitrOptions { target: 899, nearest: false }).unwrap_err();
//! assert!(err.to_string().contains("not exactly recoverable"));
//! # Ok::<(), kyrodb_backup_chain::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

mod timeline;

pub use timeline::{
    recoverable_windows_all, resolve_all, timeline_gaps, timeline_windows, BaseView, PieceView,
    Resolved, TimelinePlan, TimelineView,
};

/// What the point-in-time rule needs to know of one backup: its chain, when it was taken, the
/// snapshot it captured and the WAL entries it captured, per segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupView {
    /// Backup id.
    pub id: String,
    /// Id of the full backup its chain starts with.
    pub chain_id: String,
    /// Unix second it was taken.
    pub timestamp: u64,
    /// The snapshot it captured.
    pub snapshot: Option<SnapshotView>,
    /// The WAL segments it captured, each with `(seq, timestamp)` of every entry in file
    /// order.
    pub segments: Vec<SegmentView>,
}

/// A captured snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotView {
    /// Its file name.
    pub file: String,
    /// When the engine took it (Unix second).
    pub timestamp: u64,
    /// The last WAL sequence number it contains.
    pub last_wal_seq: u64,
}

/// A captured WAL segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentView {
    /// Its file name.
    pub name: String,
    /// `(seq, timestamp)` of every captured entry, in file order.
    pub entries: Vec<(u64, u64)>,
}

/// Why a point in time cannot be rebuilt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository holds no backup at all.
    #[error("no backup to restore from")]
    NoBackups,
    /// `T` is not exactly recoverable (and `--nearest` was not asked, or nothing earlier is).
    #[error("{target} is not exactly recoverable: {}", describe_windows(.windows))]
    NotRecoverable {
        /// The second asked for.
        target: u64,
        /// Every recoverable window of every chain, oldest first.
        windows: Vec<Window>,
    },
    /// A chain's WAL holds entries without sequence numbers (legacy W1/W2 layouts).
    #[error("chain {chain_id} holds legacy WAL entries without sequence numbers; point-in-time restore needs W3 entries")]
    LegacyWal {
        /// The chain.
        chain_id: String,
    },
}

fn describe_windows(windows: &[Window]) -> String {
    if windows.is_empty() {
        return "no second is recoverable from these backups".into();
    }
    let list: Vec<String> = windows.iter().map(ToString::to_string).collect();
    format!(
        "recoverable windows (Unix seconds, inclusive): {}",
        list.join(", ")
    )
}

/// A stretch of seconds, both ends inclusive, that can be restored exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Window {
    /// First recoverable second.
    pub from: u64,
    /// Last recoverable second.
    pub to: u64,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.from, self.to)
    }
}

/// What is asked of a point-in-time resolution.
#[derive(Debug, Clone, Copy)]
pub struct PitrOptions {
    /// The second to rebuild (inclusive).
    pub target: u64,
    /// When `target` is not exact, rebuild the latest exact second before it instead.
    pub nearest: bool,
}

/// A captured file to take from a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// The backup whose manifest lists the file.
    pub backup_id: String,
    /// The file's name.
    pub name: String,
}

/// A WAL segment to write, cut after its first `keep_entries` frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSegment {
    /// Where the bytes come from (the capture of this segment holding the most entries).
    pub file: PlannedFile,
    /// Frames to keep from the start of the segment.
    pub keep_entries: u64,
    /// Whether that is every frame the capture holds (no cut needed).
    pub whole: bool,
}

/// Which bytes rebuild the state at a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PitrPlan {
    /// The second asked for.
    pub target: u64,
    /// The second the plan rebuilds: `target`, or the nearest exact second before it.
    pub recovered_to: u64,
    /// The chain the bytes come from.
    pub chain_id: String,
    /// The snapshot to start from (none: the empty state).
    pub snapshot: Option<PlannedFile>,
    /// `last_wal_seq` of the start.
    pub start_seq: u64,
    /// The WAL segments to replay, in order.
    pub segments: Vec<PlannedSegment>,
    /// Sequence number of the last entry the plan replays (`start_seq` when none).
    pub last_seq: u64,
}

#[derive(Debug, Clone)]
struct Snap {
    timestamp: u64,
    last_wal_seq: u64,
    file: PlannedFile,
}

#[derive(Debug, Clone)]
struct Segment {
    file: PlannedFile,
    /// `(seq, timestamp)` of every captured frame, in file order.
    entries: Vec<(u64, u64)>,
}

/// Everything one chain captured, pooled.
#[derive(Debug)]
pub(crate) struct ChainView {
    chain_id: String,
    snaps: Vec<Snap>,
    segments: Vec<Segment>,
    /// seq -> timestamp of every captured entry.
    entries: BTreeMap<u64, u64>,
    /// (taken at, last seq its capture holds) per backup.
    backups: Vec<(u64, u64)>,
}

impl ChainView {
    fn build(chain_id: &str, backups: &[&BackupView]) -> Result<Self, Error> {
        let mut snaps: BTreeMap<String, Snap> = BTreeMap::new();
        let mut segments: BTreeMap<String, Segment> = BTreeMap::new();
        let mut entries = BTreeMap::new();
        let mut ends = Vec::new();
        for m in backups {
            let mut end = 0;
            if let Some(s) = &m.snapshot {
                end = s.last_wal_seq;
                snaps.entry(s.file.clone()).or_insert_with(|| Snap {
                    timestamp: s.timestamp,
                    last_wal_seq: s.last_wal_seq,
                    file: PlannedFile {
                        backup_id: m.id.clone(),
                        name: s.file.clone(),
                    },
                });
            }
            for f in &m.segments {
                let list = f.entries.clone();
                if list.iter().any(|&(seq, _)| seq == 0) {
                    return Err(Error::LegacyWal {
                        chain_id: chain_id.to_string(),
                    });
                }
                for &(seq, ts) in &list {
                    entries.insert(seq, ts);
                    end = end.max(seq);
                }
                let longer = segments
                    .get(&f.name)
                    .is_none_or(|old| old.entries.len() < list.len());
                if longer {
                    segments.insert(
                        f.name.clone(),
                        Segment {
                            file: PlannedFile {
                                backup_id: m.id.clone(),
                                name: f.name.clone(),
                            },
                            entries: list,
                        },
                    );
                }
            }
            ends.push((m.timestamp, end));
        }
        let mut snaps: Vec<Snap> = snaps.into_values().collect();
        snaps.sort_by_key(|s| (s.timestamp, s.last_wal_seq));
        let mut segments: Vec<Segment> = segments.into_values().collect();
        segments.sort_by_key(|s| s.entries.first().map_or(u64::MAX, |e| e.0));
        Ok(Self {
            chain_id: chain_id.to_string(),
            snaps,
            segments,
            entries,
            backups: ends,
        })
    }

    /// The start for `t`: (snapshot, its `last_wal_seq`), or `None` when nothing can start.
    fn start(&self, t: u64) -> Option<(Option<&Snap>, u64)> {
        if let Some(s) = self.snaps.iter().rev().find(|s| s.timestamp <= t) {
            return Some((Some(s), s.last_wal_seq));
        }
        self.entries.contains_key(&1).then_some((None, 0))
    }

    /// If `t` is exact: (start, last seq replayed).
    fn exact(&self, t: u64) -> Option<(Option<&Snap>, u64, u64)> {
        let (snap, start_seq) = self.start(t)?;
        let mut last = start_seq;
        for (&seq, &ts) in self.entries.range(start_seq + 1..) {
            if seq != last + 1 {
                break; // a gap: the run ends at `last`
            }
            if ts > t {
                // The next captured entry exists and is after t.
                return Some((snap, start_seq, last));
            }
            last = seq;
        }
        // The run ended at the end of what was captured (or at a gap). Nothing captured later may
        // be at or before t, and some backup taken after t must have ended its capture there.
        let later_within = self.entries.range(last + 1..).any(|(_, &ts)| ts <= t);
        let proven = self.backups.iter().any(|&(tb, end)| end == last && tb > t);
        (!later_within && proven).then_some((snap, start_seq, last))
    }

    /// Seconds where exactness can change.
    fn breakpoints(&self) -> BTreeSet<u64> {
        let mut p: BTreeSet<u64> = self.entries.values().copied().collect();
        p.extend(self.snaps.iter().map(|s| s.timestamp));
        p.extend(self.backups.iter().map(|b| b.0));
        p.insert(0);
        p
    }

    pub(crate) fn windows(&self) -> Vec<Window> {
        let points: Vec<u64> = self.breakpoints().into_iter().collect();
        let mut out: Vec<Window> = Vec::new();
        for (i, &p) in points.iter().enumerate() {
            // exact() is constant on [p, next - 1]: evaluate once.
            let end = points.get(i + 1).map_or(u64::MAX, |n| n - 1);
            if self.exact(p).is_none() {
                continue;
            }
            match out.last_mut() {
                Some(w) if w.to.checked_add(1) == Some(p) => w.to = end,
                _ => out.push(Window { from: p, to: end }),
            }
        }
        out
    }

    pub(crate) fn plan(&self, target: u64, recovered_to: u64) -> Option<PitrPlan> {
        let (snap, start_seq, last_seq) = self.exact(recovered_to)?;
        let mut segments = Vec::new();
        for s in &self.segments {
            let needed = s
                .entries
                .iter()
                .any(|&(seq, _)| seq > start_seq && seq <= last_seq);
            if !needed {
                continue;
            }
            let keep = s
                .entries
                .iter()
                .take_while(|&&(seq, _)| seq <= last_seq)
                .count() as u64;
            segments.push(PlannedSegment {
                file: s.file.clone(),
                keep_entries: keep,
                whole: keep == s.entries.len() as u64,
            });
        }
        Some(PitrPlan {
            target,
            recovered_to,
            chain_id: self.chain_id.clone(),
            snapshot: snap.map(|s| s.file.clone()),
            start_seq,
            segments,
            last_seq,
        })
    }
}

pub(crate) fn chains(backups: &[BackupView]) -> Result<Vec<ChainView>, Error> {
    let mut by_chain: BTreeMap<&str, Vec<&BackupView>> = BTreeMap::new();
    for b in backups {
        by_chain.entry(b.chain_id.as_str()).or_default().push(b);
    }
    by_chain
        .into_iter()
        .map(|(id, bs)| ChainView::build(id, &bs))
        .collect()
}

/// Every window of seconds the backups can rebuild exactly, merged across chains.
///
/// # Errors
///
/// [`Error::LegacyWal`] when a chain holds WAL entries without sequence numbers.
pub fn recoverable_windows(backups: &[BackupView]) -> Result<Vec<Window>, Error> {
    let mut all: Vec<Window> = chains(backups)?
        .iter()
        .flat_map(ChainView::windows)
        .collect();
    all.sort();
    let mut merged: Vec<Window> = Vec::new();
    for w in all {
        match merged.last_mut() {
            Some(m) if w.from <= m.to.saturating_add(1) => m.to = m.to.max(w.to),
            _ => merged.push(w),
        }
    }
    Ok(merged)
}

/// Decides which bytes rebuild the state at `opts.target`; see the crate documentation.
///
/// When several chains can rebuild `T`, the one with the newest start wins (least WAL to
/// replay). With `nearest`, a `T` that is not exact resolves to the latest exact second before it.
///
/// # Errors
///
/// [`Error::NoBackups`], [`Error::NotRecoverable`] (naming every recoverable window), or
/// [`Error::LegacyWal`].
pub fn resolve(backups: &[BackupView], opts: &PitrOptions) -> Result<PitrPlan, Error> {
    if backups.is_empty() {
        return Err(Error::NoBackups);
    }
    let views = chains(backups)?;
    let best = |t: u64| {
        views
            .iter()
            .filter_map(|v| v.plan(opts.target, t))
            .max_by_key(|p| (p.start_seq, p.recovered_to))
    };
    if let Some(plan) = best(opts.target) {
        return Ok(plan);
    }
    let windows = recoverable_windows(backups)?;
    if opts.nearest {
        let before = windows
            .iter()
            .rev()
            .find(|w| w.from < opts.target)
            .map(|w| w.to.min(opts.target - 1));
        if let Some(plan) = before.and_then(best) {
            return Ok(plan);
        }
    }
    Err(Error::NotRecoverable {
        target: opts.target,
        windows,
    })
}
