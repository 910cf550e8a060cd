//! Continuous-archive timelines: the point-in-time rule over piece summaries.
//!
//! An archiver follows a live data directory and stores its WAL frames in pieces (runs of
//! consecutive frames) and the engine's snapshots as bases. A [`TimelineView`] is one continuous
//! history. The rule is the one of the crate documentation, stated over pieces so that the work
//! and memory grow with the number of pieces, never with the number of frames:
//!
//! - `T < not_before` is not exact;
//! - the start is the base with the greatest `(timestamp, last_wal_seq)` having
//!   `timestamp <= T`; without one, the empty state when some piece holds frame 1;
//! - from `n = start_seq + 1`, the piece for `n` is the one holding `n` with the greatest
//!   `last_seq` (ties: the smallest key). A piece whose first entry is after `T` ends the plan
//!   before it (exact); a piece whose last entry is after `T` ends the plan with it (exact, the
//!   restore cuts inside it); otherwise it is replayed whole and the walk goes on at
//!   `last_seq + 1`;
//! - when no piece holds `n` (the end of what was archived, or a gap), `T` is exact when no
//!   piece starting after `n - 1` has an entry at or before `T`, and some marker proves that the
//!   archiver had every frame up to `n - 1` and none after at a second greater than `T`.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet};

use crate::{chains, BackupView, ChainView, Error, PitrOptions, PitrPlan, Window};

/// One continuous history kept by an archiver: its bases, its pieces and what it observed.
///
/// Entry timestamps are assumed non-decreasing with the sequence number inside a timeline (the
/// engine stamps WAL entries in write order), so a piece's `first_ts` and `last_ts` are the
/// timestamps of its first and last frames, and every frame after a marker's `last_seq` is at
/// or after the marker's `observed_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineView {
    /// Timeline id.
    pub id: String,
    /// The first second the timeline may rebuild (when the archiver started following the
    /// data directory); earlier seconds are never exact on it.
    pub not_before: u64,
    /// The snapshots it stored.
    pub bases: Vec<BaseView>,
    /// The runs of WAL frames it stored, in any order; they may overlap (a merged piece and the
    /// pieces it merges). A piece with `first_seq > last_seq` holds no frame and is ignored.
    pub pieces: Vec<PieceView>,
    /// Extra markers `(observed_at, last_seq)`: at second `observed_at` the archiver had every
    /// frame up to `last_seq` and none after, so frames after `last_seq` have timestamps
    /// `>= observed_at`. Every piece is such a marker too.
    pub observed: Vec<(u64, u64)>,
}

/// A snapshot stored by a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseView {
    /// Where it is stored.
    pub key: String,
    /// When the engine took it (Unix second).
    pub timestamp: u64,
    /// The last WAL sequence number it contains: it is the state after that frame.
    pub last_wal_seq: u64,
}

/// A run of consecutive WAL frames stored by a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceView {
    /// Where it is stored.
    pub key: String,
    /// Sequence number of its first frame.
    pub first_seq: u64,
    /// Sequence number of its last frame.
    pub last_seq: u64,
    /// The smallest entry timestamp it holds.
    pub first_ts: u64,
    /// The greatest entry timestamp it holds.
    pub last_ts: u64,
    /// A second at which the archiver had every frame up to `last_seq` and none after (for a
    /// merged piece: that of the last piece it merges).
    pub observed_at: u64,
}

/// Which pieces of a timeline rebuild the state at a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelinePlan {
    /// The second asked for.
    pub target: u64,
    /// The second the plan rebuilds: `target`, or the nearest exact second before it.
    pub recovered_to: u64,
    /// The timeline the bytes come from.
    pub timeline_id: String,
    /// The base to start from (none: the empty state).
    pub base: Option<BaseView>,
    /// `last_wal_seq` of the start.
    pub start_seq: u64,
    /// The pieces to replay, in replay order. A piece may start before the next frame needed
    /// (the first one before `start_seq + 1`, a later one inside the previous piece): frames
    /// whose sequence number is not greater than the last one applied are skipped.
    pub pieces: Vec<PieceView>,
    /// Equal to `recovered_to`: replay only entries with a timestamp `<=` this, stopping at the
    /// first (not skipped) entry after it. The last piece may so contribute part of its frames,
    /// or none.
    pub cut_after_ts: u64,
}

/// What rebuilds a point in time: backups, or a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A backup chain.
    Backups(PitrPlan),
    /// A continuous-archive timeline.
    Timeline(TimelinePlan),
}

/// A timeline indexed for the walk.
struct Index<'a> {
    view: &'a TimelineView,
    /// Sorted by `(timestamp, last_wal_seq, Reverse(key))`: the preferred base of a prefix is
    /// its last one.
    bases: Vec<&'a BaseView>,
    /// The pieces holding frames, sorted by `first_seq`.
    pieces: Vec<&'a PieceView>,
    /// `reach[i]`: the index of the piece of `pieces[..=i]` with the greatest `last_seq` (ties:
    /// the smallest key).
    reach: Vec<usize>,
    /// `later_ts[i]`: the smallest `first_ts` of `pieces[i..]`.
    later_ts: Vec<u64>,
    /// `last_seq` -> the greatest `observed_at` of its markers.
    proofs: BTreeMap<u64, u64>,
}

/// Where an exact walk starts and which pieces it replays.
struct Walk<'a> {
    base: Option<&'a BaseView>,
    start_seq: u64,
    pieces: Vec<&'a PieceView>,
}

impl<'a> Index<'a> {
    fn new(view: &'a TimelineView) -> Self {
        let mut bases: Vec<&BaseView> = view.bases.iter().collect();
        bases.sort_by(|a, b| {
            (a.timestamp, a.last_wal_seq, Reverse(&a.key)).cmp(&(
                b.timestamp,
                b.last_wal_seq,
                Reverse(&b.key),
            ))
        });
        let mut pieces: Vec<&PieceView> = view
            .pieces
            .iter()
            .filter(|p| p.first_seq <= p.last_seq)
            .collect();
        pieces.sort_by_key(|p| p.first_seq);
        let mut reach: Vec<usize> = Vec::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            let keep = reach.last().copied().filter(|&j| {
                let q = pieces[j];
                (q.last_seq, Reverse(&q.key)) >= (p.last_seq, Reverse(&p.key))
            });
            reach.push(keep.unwrap_or(i));
        }
        let mut later_ts = vec![u64::MAX; pieces.len()];
        let mut min = u64::MAX;
        for (i, p) in pieces.iter().enumerate().rev() {
            min = min.min(p.first_ts);
            later_ts[i] = min;
        }
        let mut proofs: BTreeMap<u64, u64> = BTreeMap::new();
        let markers = view
            .observed
            .iter()
            .copied()
            .chain(pieces.iter().map(|p| (p.observed_at, p.last_seq)));
        for (at, seq) in markers {
            let best = proofs.entry(seq).or_insert(at);
            *best = (*best).max(at);
        }
        Self {
            view,
            bases,
            pieces,
            reach,
            later_ts,
            proofs,
        }
    }

    /// The piece for `n`: holding it, with the greatest `last_seq` (ties: the smallest key).
    fn piece_for(&self, n: u64) -> Option<&'a PieceView> {
        let i = self.pieces.partition_point(|p| p.first_seq <= n);
        let p = self.pieces[self.reach[i.checked_sub(1)?]];
        (p.last_seq >= n).then_some(p)
    }

    /// The newest base taken at or before `t`.
    fn base_at(&self, t: u64) -> Option<&'a BaseView> {
        let i = self.bases.partition_point(|b| b.timestamp <= t);
        Some(self.bases[i.checked_sub(1)?])
    }

    /// If `t` is exact: where the walk starts and the pieces it replays.
    fn walk(&self, t: u64) -> Option<Walk<'a>> {
        if t < self.view.not_before {
            return None;
        }
        let (base, start_seq) = match self.base_at(t) {
            Some(b) => (Some(b), b.last_wal_seq),
            None if self.piece_for(1).is_some() => (None, 0),
            None => return None,
        };
        let mut walk = Walk {
            base,
            start_seq,
            pieces: Vec::new(),
        };
        // Every frame up to `done` is replayed (or in the start).
        let mut done = start_seq;
        while let Some(p) = done.checked_add(1).and_then(|n| self.piece_for(n)) {
            if p.first_ts > t {
                return Some(walk); // The next frame is after t: cut before the piece.
            }
            walk.pieces.push(p);
            if p.last_ts > t {
                return Some(walk); // The restore cuts inside the piece.
            }
            done = p.last_seq;
        }
        // The run ends at `done` (the end of the archive, or a gap). Nothing archived later may
        // be at or before t, and a marker must prove the end after t.
        let later = self.pieces.partition_point(|p| p.first_seq <= done);
        let later_within = self.later_ts.get(later).is_some_and(|&ts| ts <= t);
        let proven = self.proofs.get(&done).is_some_and(|&at| at > t);
        (!later_within && proven).then_some(walk)
    }

    /// Seconds where exactness can change: it is constant from one to the second before the
    /// next.
    fn breakpoints(&self) -> BTreeSet<u64> {
        let mut p = BTreeSet::from([0, self.view.not_before]);
        p.extend(self.bases.iter().map(|b| b.timestamp));
        p.extend(self.pieces.iter().flat_map(|q| [q.first_ts, q.last_ts]));
        p.extend(self.proofs.values().copied());
        p
    }

    fn windows(&self) -> Vec<Window> {
        let points: Vec<u64> = self.breakpoints().into_iter().collect();
        let mut out: Vec<Window> = Vec::new();
        for (i, &p) in points.iter().enumerate() {
            let end = points.get(i + 1).map_or(u64::MAX, |n| n - 1);
            if self.walk(p).is_none() {
                continue;
            }
            match out.last_mut() {
                Some(w) if w.to.checked_add(1) == Some(p) => w.to = end,
                _ => out.push(Window { from: p, to: end }),
            }
        }
        out
    }

    fn plan(&self, target: u64, recovered_to: u64) -> Option<TimelinePlan> {
        let walk = self.walk(recovered_to)?;
        Some(TimelinePlan {
            target,
            recovered_to,
            timeline_id: self.view.id.clone(),
            base: walk.base.cloned(),
            start_seq: walk.start_seq,
            pieces: walk.pieces.into_iter().cloned().collect(),
            cut_after_ts: recovered_to,
        })
    }
}

/// Sorts windows and merges the overlapping or adjacent ones.
fn merge(mut all: Vec<Window>) -> Vec<Window> {
    all.sort();
    let mut merged: Vec<Window> = Vec::new();
    for w in all {
        match merged.last_mut() {
            Some(m) if w.from <= m.to.saturating_add(1) => m.to = m.to.max(w.to),
            _ => merged.push(w),
        }
    }
    merged
}

/// Every second the timeline can rebuild exactly, as inclusive windows, sorted and merged.
///
/// Exactness only changes at a breakpoint (`0`, `not_before`, a base's timestamp, a piece's
/// `first_ts` or `last_ts`, a marker's `observed_at`), so it is decided once per breakpoint; each
/// decision walks the pieces after the newest base, so the cost is about breakpoints times the
/// pieces between two bases.
pub fn timeline_windows(t: &TimelineView) -> Vec<Window> {
    Index::new(t).windows()
}

/// The seconds from `not_before` to the timeline's last exact second that it cannot rebuild:
/// the holes between its windows, and the stretch from `not_before` to its first window when
/// that starts later. Empty when no second is exact.
pub fn timeline_gaps(t: &TimelineView) -> Vec<Window> {
    let mut out = Vec::new();
    let mut from = t.not_before;
    for w in timeline_windows(t) {
        if w.from > from {
            out.push(Window {
                from,
                to: w.from - 1,
            });
        }
        match w.to.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    out
}

/// Every window of seconds the backups or the timelines can rebuild exactly, merged.
///
/// # Errors
///
/// [`Error::LegacyWal`] when a backup chain holds WAL entries without sequence numbers.
pub fn recoverable_windows_all(
    backups: &[BackupView],
    timelines: &[TimelineView],
) -> Result<Vec<Window>, Error> {
    let views = chains(backups)?;
    Ok(all_windows(
        &views,
        &timelines.iter().map(Index::new).collect::<Vec<_>>(),
    ))
}

fn all_windows(views: &[ChainView], indexes: &[Index<'_>]) -> Vec<Window> {
    merge(
        views
            .iter()
            .flat_map(ChainView::windows)
            .chain(indexes.iter().flat_map(Index::windows))
            .collect(),
    )
}

/// Decides which bytes rebuild the state at `opts.target`, from backup chains or timelines.
///
/// Every chain and timeline that can rebuild `T` exactly is a candidate; the one with the
/// newest start (greatest `start_seq`) wins, backups on a tie (between chains as in
/// [`resolve`](crate::resolve), between timelines the smallest id). With `nearest`, a `T` that is
/// not exact resolves to the latest second before it that some chain or timeline rebuilds.
///
/// ```
/// use kyrodb_backup_chain::{resolve_all, PieceView, PitrOptions, Resolved, TimelineView};
///
/// // Frames 1..=3 written at 100..=102, archived at 103 in one piece.
/// let tl = TimelineView {
///     id: "t1".into(),
///     not_before: 50,
///     bases: vec![],
///     pieces: vec![PieceView {
///         key: "wal/1-3".into(),
///         first_seq: 1,
///         last_seq: 3,
///         first_ts: 100,
///         last_ts: 102,
///         observed_at: 103,
///     }],
///     observed: vec![],
/// };
/// let Resolved::Timeline(plan) = resolve_all(&[], &[tl.clone()], &PitrOptions { target: 101, nearest: false })? else {
///     unreachable!()
/// };
/// assert_eq!((plan.start_seq, plan.pieces.len(), plan.cut_after_ts), (0, 1, 101));
/// // Nothing proves what came after 103.
/// assert!(resolve_all(&[], &[tl], &PitrOptions { target: 103, nearest: false }).is_err());
/// # Ok::<(), kyrodb_backup_chain::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::NoBackups`] when there is neither a backup nor a timeline,
/// [`Error::NotRecoverable`] (naming every window of the chains and timelines), or
/// [`Error::LegacyWal`].
pub fn resolve_all(
    backups: &[BackupView],
    timelines: &[TimelineView],
    opts: &PitrOptions,
) -> Result<Resolved, Error> {
    if backups.is_empty() && timelines.is_empty() {
        return Err(Error::NoBackups);
    }
    let views = chains(backups)?;
    let indexes: Vec<Index<'_>> = timelines.iter().map(Index::new).collect();
    let best = |t: u64| {
        let from_backups = views
            .iter()
            .filter_map(|v| v.plan(opts.target, t))
            .max_by_key(|p| (p.start_seq, p.recovered_to));
        let from_timelines = indexes
            .iter()
            .filter_map(|x| x.plan(opts.target, t))
            .min_by(|a, b| match b.start_seq.cmp(&a.start_seq) {
                Ordering::Equal => a.timeline_id.cmp(&b.timeline_id),
                o => o,
            });
        match (from_backups, from_timelines) {
            (Some(b), Some(p)) if p.start_seq > b.start_seq => Some(Resolved::Timeline(p)),
            (Some(b), _) => Some(Resolved::Backups(b)),
            (None, p) => p.map(Resolved::Timeline),
        }
    };
    if let Some(r) = best(opts.target) {
        return Ok(r);
    }
    let windows = all_windows(&views, &indexes);
    if opts.nearest {
        let before = windows
            .iter()
            .rev()
            .find(|w| w.from < opts.target)
            .map(|w| w.to.min(opts.target - 1));
        if let Some(r) = before.and_then(best) {
            return Ok(r);
        }
    }
    Err(Error::NotRecoverable {
        target: opts.target,
        windows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{recoverable_windows, resolve, SegmentView, SnapshotView};

    fn piece(key: &str, seqs: (u64, u64), ts: (u64, u64), observed_at: u64) -> PieceView {
        PieceView {
            key: key.into(),
            first_seq: seqs.0,
            last_seq: seqs.1,
            first_ts: ts.0,
            last_ts: ts.1,
            observed_at,
        }
    }

    fn base(key: &str, timestamp: u64, last_wal_seq: u64) -> BaseView {
        BaseView {
            key: key.into(),
            timestamp,
            last_wal_seq,
        }
    }

    fn timeline(
        not_before: u64,
        bases: Vec<BaseView>,
        pieces: Vec<PieceView>,
        observed: Vec<(u64, u64)>,
    ) -> TimelineView {
        TimelineView {
            id: "t1".into(),
            not_before,
            bases,
            pieces,
            observed,
        }
    }

    fn windows(list: &[(u64, u64)]) -> Vec<Window> {
        list.iter().map(|&(from, to)| Window { from, to }).collect()
    }

    fn opts(target: u64, nearest: bool) -> PitrOptions {
        PitrOptions { target, nearest }
    }

    /// Frame `s` written at `100 + 10 * s`: 1..=4 in `p1` (archived at 145), 5..=10 in `p2`.
    fn run(not_before: u64, p2_observed_at: u64, observed: Vec<(u64, u64)>) -> TimelineView {
        timeline(
            not_before,
            vec![],
            vec![
                piece("p1", (1, 4), (110, 140), 145),
                piece("p2", (5, 10), (150, 200), p2_observed_at),
            ],
            observed,
        )
    }

    /// Expected plan at a second: (base key, start seq, piece keys), or not exact.
    type Expect = Option<(Option<&'static str>, u64, &'static [&'static str])>;

    struct Case {
        name: &'static str,
        timeline: TimelineView,
        windows: &'static [(u64, u64)],
        plans: &'static [(u64, Expect)],
    }

    #[allow(clippy::too_many_lines)] // one table, a case after another
    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "continuous run",
                timeline: run(50, 205, vec![]),
                windows: &[(50, 204)],
                plans: &[
                    (49, None),
                    (50, Some((None, 0, &[]))),
                    (109, Some((None, 0, &[]))),
                    (200, Some((None, 0, &["p1", "p2"]))),
                    (204, Some((None, 0, &["p1", "p2"]))),
                    (205, None),
                ],
            },
            Case {
                name: "cut inside a piece",
                timeline: run(50, 205, vec![]),
                windows: &[(50, 204)],
                plans: &[
                    (110, Some((None, 0, &["p1"]))),
                    (139, Some((None, 0, &["p1"]))),
                    (150, Some((None, 0, &["p1", "p2"]))),
                    (165, Some((None, 0, &["p1", "p2"]))),
                ],
            },
            Case {
                name: "cut before a piece",
                timeline: run(50, 205, vec![]),
                windows: &[(50, 204)],
                plans: &[
                    (140, Some((None, 0, &["p1"]))),
                    (149, Some((None, 0, &["p1"]))),
                ],
            },
            Case {
                name: "end of run not proven (piece observed at its last entry)",
                timeline: run(50, 200, vec![(300, 9)]),
                windows: &[(50, 199)],
                plans: &[(199, Some((None, 0, &["p1", "p2"]))), (200, None)],
            },
            Case {
                name: "end of run proven by a marker",
                timeline: run(50, 200, vec![(230, 10), (220, 10)]),
                windows: &[(50, 229)],
                plans: &[(229, Some((None, 0, &["p1", "p2"]))), (230, None)],
            },
            Case {
                name: "gap in seqs: hole until the next base",
                timeline: timeline(
                    0,
                    vec![base("b6", 165, 6)],
                    vec![
                        piece("p1", (1, 4), (110, 140), 141),
                        piece("p3", (7, 10), (170, 200), 201),
                    ],
                    vec![],
                ),
                windows: &[(0, 140), (165, 200)],
                plans: &[
                    (140, Some((None, 0, &["p1"]))),
                    (141, None),
                    (164, None),
                    (165, Some((Some("b6"), 6, &[]))),
                    (180, Some((Some("b6"), 6, &["p3"]))),
                    (200, Some((Some("b6"), 6, &["p3"]))),
                    (201, None),
                ],
            },
            Case {
                name: "overlapping merged and small pieces",
                timeline: timeline(
                    0,
                    vec![],
                    vec![
                        piece("s1", (1, 3), (110, 130), 131),
                        piece("s2", (4, 6), (140, 160), 161),
                        piece("s3", (7, 9), (170, 190), 191),
                        piece("m", (1, 6), (110, 160), 161),
                        piece("a", (1, 6), (110, 160), 161),
                        piece("m2", (4, 9), (140, 190), 191),
                    ],
                    vec![],
                ),
                windows: &[(0, 190)],
                plans: &[
                    (120, Some((None, 0, &["a"]))),
                    // m2 holds frame 7 (at 170) and starts at 4 (at 140, <= t): taken, and
                    // the restore replays none of it (frames 4..=6 are skipped, 7 is cut).
                    (160, Some((None, 0, &["a", "m2"]))),
                    (165, Some((None, 0, &["a", "m2"]))),
                    (185, Some((None, 0, &["a", "m2"]))),
                    (190, Some((None, 0, &["a", "m2"]))),
                    (191, None),
                ],
            },
            Case {
                name: "not_before clips",
                timeline: run(120, 205, vec![]),
                windows: &[(120, 204)],
                plans: &[(119, None), (120, Some((None, 0, &["p1"])))],
            },
            Case {
                name: "no piece holds frame 1: no empty start",
                timeline: timeline(
                    0,
                    vec![],
                    vec![piece("p2", (2, 4), (120, 140), 150)],
                    vec![(500, 4)],
                ),
                windows: &[],
                plans: &[(100, None), (145, None)],
            },
            Case {
                name: "empty start from seq 1",
                timeline: timeline(
                    0,
                    vec![],
                    vec![
                        piece("p2", (2, 4), (120, 140), 150),
                        piece("p1", (1, 1), (110, 110), 111),
                    ],
                    vec![],
                ),
                windows: &[(0, 149)],
                plans: &[
                    (0, Some((None, 0, &[]))),
                    (115, Some((None, 0, &["p1"]))),
                    (145, Some((None, 0, &["p1", "p2"]))),
                    (150, None),
                ],
            },
            Case {
                name: "a base taken after t is not used; ties",
                timeline: timeline(
                    0,
                    vec![base("b7", 300, 7), base("z8", 300, 8), base("a8", 300, 8)],
                    vec![
                        piece("p1", (1, 4), (110, 140), 141),
                        piece("p9", (9, 10), (310, 320), 321),
                    ],
                    vec![],
                ),
                windows: &[(0, 140), (300, 320)],
                plans: &[
                    (130, Some((None, 0, &["p1"]))),
                    (250, None),
                    (299, None),
                    (305, Some((Some("a8"), 8, &[]))),
                    (315, Some((Some("a8"), 8, &["p9"]))),
                    (321, None),
                ],
            },
        ]
    }

    #[test]
    fn table() {
        for c in cases() {
            let name = c.name;
            assert_eq!(timeline_windows(&c.timeline), windows(c.windows), "{name}");
            for &(t, expect) in c.plans {
                let got = resolve_all(&[], std::slice::from_ref(&c.timeline), &opts(t, false));
                match (got, expect) {
                    (Ok(Resolved::Timeline(p)), Some((base, start_seq, keys))) => {
                        let got_keys: Vec<&str> = p.pieces.iter().map(|p| p.key.as_str()).collect();
                        assert_eq!(
                            p.base.as_ref().map(|b| b.key.as_str()),
                            base,
                            "{name} at {t}"
                        );
                        assert_eq!(p.start_seq, start_seq, "{name} at {t}");
                        assert_eq!(got_keys, keys, "{name} at {t}");
                        assert_eq!(
                            (
                                p.target,
                                p.recovered_to,
                                p.cut_after_ts,
                                p.timeline_id.as_str()
                            ),
                            (t, t, t, "t1"),
                            "{name} at {t}"
                        );
                    }
                    (Err(Error::NotRecoverable { target, windows: w }), None) => {
                        assert_eq!(target, t, "{name}");
                        assert_eq!(w, windows(c.windows), "{name} at {t}");
                    }
                    (got, expect) => panic!("{name} at {t}: got {got:?}, expected {expect:?}"),
                }
            }
        }
    }

    #[test]
    fn gaps_are_the_holes() {
        let c = &cases()[5];
        assert_eq!(timeline_gaps(&c.timeline), windows(&[(141, 164)]));
        // From not_before to a first window that starts later.
        let late = timeline(
            50,
            vec![base("b4", 120, 4)],
            vec![piece("p5", (5, 6), (130, 140), 150)],
            vec![],
        );
        assert_eq!(timeline_windows(&late), windows(&[(120, 149)]));
        assert_eq!(timeline_gaps(&late), windows(&[(50, 119)]));
        // Nothing exact, nothing named; a window open to the end leaves no gap after it.
        assert_eq!(timeline_gaps(&cases()[8].timeline), []);
        let open = run(0, 205, vec![(u64::MAX, 10)]);
        assert_eq!(timeline_windows(&open), windows(&[(0, u64::MAX - 1)]));
        assert_eq!(timeline_gaps(&open), []);
    }

    fn backup(id: &str, tb: u64, snapshot: (u64, u64), entries: &[(u64, u64)]) -> BackupView {
        BackupView {
            id: id.into(),
            chain_id: id.into(),
            timestamp: tb,
            snapshot: Some(SnapshotView {
                file: format!("snapshot_{}.snap", snapshot.0),
                timestamp: snapshot.0,
                last_wal_seq: snapshot.1,
            }),
            segments: vec![SegmentView {
                name: "wal_1.wal".into(),
                entries: entries.to_vec(),
            }],
        }
    }

    fn chosen(r: Result<Resolved, Error>) -> (&'static str, u64, u64) {
        match r {
            Ok(Resolved::Backups(p)) => ("backups", p.start_seq, p.recovered_to),
            Ok(Resolved::Timeline(p)) => ("timeline", p.start_seq, p.recovered_to),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn backups_and_timelines_together() {
        // Disjoint windows: the timeline rebuilds 50..=204, the backup 300..=399.
        let tl = [run(50, 205, vec![])];
        let b = [backup("b1", 400, (300, 12), &[(13, 310), (14, 320)])];
        let all = windows(&[(50, 204), (300, 399)]);
        assert_eq!(recoverable_windows_all(&b, &tl).unwrap(), all);
        assert_eq!(
            chosen(resolve_all(&b, &tl, &opts(120, false))),
            ("timeline", 0, 120)
        );
        assert_eq!(
            chosen(resolve_all(&b, &tl, &opts(310, false))),
            ("backups", 12, 310)
        );
        let err = resolve_all(&b, &tl, &opts(250, false)).unwrap_err();
        assert!(matches!(&err, Error::NotRecoverable { target: 250, windows } if *windows == all));
        let text = err.to_string();
        assert!(
            text.contains("50..=204") && text.contains("300..=399"),
            "{text}"
        );
        assert_eq!(
            chosen(resolve_all(&b, &tl, &opts(250, true))),
            ("timeline", 0, 204)
        );
        assert_eq!(
            chosen(resolve_all(&b, &tl, &opts(450, true))),
            ("backups", 12, 399)
        );
        assert!(matches!(
            resolve_all(&b, &tl, &opts(10, true)),
            Err(Error::NotRecoverable { target: 10, .. })
        ));

        // Both exact: the newest start wins, backups on a tie.
        let entries: Vec<(u64, u64)> = (6..=10).map(|s| (s, 100 + 10 * s)).collect();
        let b = [backup("b1", 400, (150, 5), &entries)];
        let mut t = run(50, 205, vec![]);
        t.bases = vec![base("tb5", 150, 5), base("tb7", 170, 7)];
        let tl = [t];
        assert_eq!(
            chosen(resolve_all(&b, &tl, &opts(160, false))),
            ("backups", 5, 160)
        );
        assert_eq!(
            chosen(resolve_all(&b, &tl, &opts(175, false))),
            ("timeline", 7, 175)
        );
        assert_eq!(
            chosen(resolve_all(&b, &tl, &opts(120, false))),
            ("timeline", 0, 120)
        );
        // Between timelines, the smallest id.
        let mut two = [tl[0].clone(), tl[0].clone()];
        two[0].id = "t2".into();
        let Ok(Resolved::Timeline(p)) = resolve_all(&[], &two, &opts(175, false)) else {
            panic!("timeline expected")
        };
        assert_eq!(p.timeline_id, "t1");

        // Nothing at all, or only timelines that rebuild nothing.
        assert!(matches!(
            resolve_all(&[], &[], &opts(1, true)),
            Err(Error::NoBackups)
        ));
        let empty = timeline(0, vec![], vec![], vec![]);
        assert!(matches!(
            resolve_all(&[], &[empty], &opts(1, true)),
            Err(Error::NotRecoverable { windows, .. }) if windows.is_empty()
        ));
        let legacy = backup("b1", 400, (150, 5), &[(0, 100)]);
        assert!(matches!(
            resolve_all(&[legacy], &tl, &opts(120, false)),
            Err(Error::LegacyWal { .. })
        ));
    }

    /// `SplitMix64`: deterministic histories.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn without_timelines_it_is_resolve() {
        let mut rng = Rng(7);
        for round in 0..100 {
            let mut backups = Vec::new();
            let (mut seq, mut ts) = (0, 100);
            let mut snap = (100, 0);
            for n in 0..=rng.below(4) {
                let first = seq + 1;
                let mut es = Vec::new();
                for _ in 0..rng.below(6) {
                    seq += 1;
                    ts += rng.below(3);
                    es.push((seq, ts));
                }
                if rng.below(3) == 0 {
                    ts += 1;
                    snap = (ts, seq);
                }
                let keep_from = if rng.below(4) == 0 {
                    first + rng.below(3)
                } else {
                    1
                };
                es.retain(|e| e.0 >= keep_from);
                ts += 1 + rng.below(3);
                let mut b = backup(&format!("b{n}"), ts, snap, &es);
                b.chain_id = format!("c{}", rng.below(2));
                backups.push(b);
            }
            assert_eq!(
                recoverable_windows_all(&backups, &[]).unwrap(),
                recoverable_windows(&backups).unwrap()
            );
            for t in 0..=ts + 3 {
                for nearest in [false, true] {
                    let o = opts(t, nearest);
                    match (resolve_all(&backups, &[], &o), resolve(&backups, &o)) {
                        (Ok(Resolved::Backups(a)), Ok(b)) => {
                            assert_eq!(a, b, "round {round} t {t}");
                        }
                        (Err(a), Err(b)) => {
                            assert_eq!(a.to_string(), b.to_string(), "round {round} t {t}");
                        }
                        (a, b) => panic!("round {round} t {t}: {a:?} vs {b:?}"),
                    }
                }
            }
        }
    }

    /// A timeline over frames `1..=ts.len()`, frame `s` written at `ts[s - 1]`.
    fn generate(rng: &mut Rng) -> (Vec<u64>, TimelineView) {
        let n = rng.below(31);
        let mut ts = Vec::new();
        let mut now = rng.below(10);
        for _ in 0..n {
            now += [0, 0, 1, 1, 2, 4][rng.below(6) as usize];
            ts.push(now);
        }
        let end = now + 3;
        let ts_of = |s: u64| ts[(s - 1) as usize];
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut s = 1;
        while s <= n {
            if rng.below(5) == 0 {
                s += 1 + rng.below(3); // frames never archived
                continue;
            }
            let run_end = (s + rng.below(10)).min(n);
            let mut run = Vec::new();
            while s <= run_end {
                let last = (s + rng.below(4)).min(run_end);
                run.push((s, last));
                s = last + 1;
            }
            let mut merged = Vec::new();
            for _ in 0..rng.below(3) {
                if run.len() < 2 {
                    break;
                }
                let i = rng.below(run.len() as u64 - 1) as usize;
                let j = i + 1 + rng.below((run.len() - 1 - i) as u64) as usize;
                merged.push((run[i].0, run[j].1));
            }
            if rng.below(3) == 0 {
                // The merged pieces replaced what they merge.
                run.retain(|r| !merged.iter().any(|m| m.0 <= r.0 && r.1 <= m.1));
            }
            ranges.extend(run);
            ranges.extend(merged);
        }
        let mut pieces: Vec<PieceView> = Vec::new();
        for (i, &(f, l)) in ranges.iter().enumerate() {
            let observed_at = match rng.below(4) {
                0 => ts_of(l),
                1 if l < n => ts_of(l + 1),
                1 => end + rng.below(3),
                2 => ts_of(l) + rng.below(5),
                _ => rng.below(end + 3),
            };
            let key = format!("{}-{i}", rng.below(10));
            pieces.push(piece(&key, (f, l), (ts_of(f), ts_of(l)), observed_at));
        }
        if n > 0 && rng.below(10) == 0 {
            let x = 1 + rng.below(n);
            pieces.push(piece("empty", (x + 1, x), (0, 0), end + 3));
        }
        for i in (1..pieces.len()).rev() {
            pieces.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut bases = Vec::new();
        for _ in 0..rng.below(4) {
            let seq = rng.below(n + 1);
            let timestamp = match rng.below(3) {
                0 => rng.below(end + 3),
                _ if seq == 0 => rng.below(10),
                _ => ts_of(seq) + rng.below(3),
            };
            bases.push(base(&format!("b{}", rng.below(3)), timestamp, seq));
            if rng.below(3) == 0 {
                // The same snapshot stored twice.
                bases.push(base(&format!("c{}", rng.below(6)), timestamp, seq));
            }
        }
        let observed = (0..rng.below(3))
            .map(|_| (rng.below(end + 3), rng.below(n + 2)))
            .collect();
        let not_before = if rng.below(3) == 0 { rng.below(end) } else { 0 };
        (ts, timeline(not_before, bases, pieces, observed))
    }

    /// The rule per entry: (base, start seq, last seq replayed, pieces planned), or not exact.
    fn reference<'a>(
        ts: &[u64],
        tl: &'a TimelineView,
        t: u64,
    ) -> Option<(Option<&'a BaseView>, u64, u64, Vec<&'a PieceView>)> {
        let pieces: Vec<&PieceView> = tl
            .pieces
            .iter()
            .filter(|p| p.first_seq <= p.last_seq)
            .collect();
        let captured = |s: u64| pieces.iter().any(|p| p.first_seq <= s && s <= p.last_seq);
        let ts_of = |s: u64| ts[(s - 1) as usize];
        if t < tl.not_before {
            return None;
        }
        let base = tl
            .bases
            .iter()
            .filter(|b| b.timestamp <= t)
            .max_by_key(|b| (b.timestamp, b.last_wal_seq, Reverse(&b.key)));
        let start = match base {
            Some(b) => b.last_wal_seq,
            None if captured(1) => 0,
            None => return None,
        };
        let mut last = start;
        while captured(last + 1) && ts_of(last + 1) <= t {
            last += 1;
        }
        let markers = tl
            .observed
            .iter()
            .copied()
            .chain(pieces.iter().map(|p| (p.observed_at, p.last_seq)));
        let proven = markers.into_iter().any(|(at, seq)| seq == last && at > t);
        let later_within = (last + 1..=ts.len() as u64).any(|s| captured(s) && ts_of(s) <= t);
        if !captured(last + 1) && (!proven || later_within) {
            return None;
        }
        let choose = |n: u64| {
            pieces
                .iter()
                .copied()
                .filter(|p| p.first_seq <= n && n <= p.last_seq)
                .max_by_key(|p| (p.last_seq, Reverse(&p.key)))
        };
        let mut planned = Vec::new();
        let mut n = start + 1;
        while n <= last + 1 {
            let Some(p) = choose(n) else { break };
            if n <= last {
                planned.push(p);
                n = p.last_seq + 1;
                continue;
            }
            // Frame n is after t: the piece is taken when one of its entries is not.
            if (p.first_seq..=p.last_seq).any(|s| ts_of(s) <= t) {
                planned.push(p);
            }
            break;
        }
        Some((base, start, last, planned))
    }

    /// Replays a plan frame by frame; returns the last frame applied.
    fn replay(ts: &[u64], walk: &Walk<'_>, t: u64, ctx: &str) -> u64 {
        let mut applied = walk.start_seq;
        for (i, p) in walk.pieces.iter().enumerate() {
            for s in p.first_seq..=p.last_seq {
                if s <= applied {
                    continue;
                }
                if ts[(s - 1) as usize] > t {
                    assert_eq!(i + 1, walk.pieces.len(), "{ctx}: pieces after the cut");
                    return applied;
                }
                assert_eq!(s, applied + 1, "{ctx}: frame {s} after {applied}");
                applied = s;
            }
        }
        applied
    }

    #[test]
    fn properties_over_generated_timelines() {
        let mut rng = Rng(0x7469_6d65);
        for round in 0..4000 {
            let (ts, tl) = generate(&mut rng);
            let index = Index::new(&tl);
            let got = timeline_windows(&tl);
            let horizon = ts.last().copied().unwrap_or(10) + 8;
            let ctx = format!("round {round}: {tl:?}");
            for pair in got.windows(2) {
                assert!(
                    pair[0].to.saturating_add(1) < pair[1].from,
                    "{ctx}: {got:?}"
                );
            }
            assert!(got.iter().all(|w| w.from <= w.to), "{ctx}: {got:?}");
            let mut exact = Vec::new();
            for t in 0..=horizon {
                let want = reference(&ts, &tl, t);
                let inside = got.iter().any(|w| w.from <= t && t <= w.to);
                assert_eq!(inside, want.is_some(), "{ctx}: t {t}, windows {got:?}");
                let walk = index.walk(t);
                assert_eq!(walk.is_some(), want.is_some(), "{ctx}: t {t}");
                if let (Some(walk), Some((base, start, last, planned))) = (walk, want) {
                    assert_eq!(walk.base, base, "{ctx}: t {t}");
                    assert_eq!(walk.start_seq, start, "{ctx}: t {t}");
                    assert_eq!(walk.pieces, planned, "{ctx}: t {t}");
                    assert_eq!(replay(&ts, &walk, t, &ctx), last, "{ctx}: t {t}");
                }
                exact.push(inside);
            }
            // Past the horizon nothing changes.
            assert_eq!(
                got.last().is_some_and(|w| w.to == u64::MAX),
                exact[horizon as usize],
                "{ctx}"
            );

            // Gaps: the seconds from not_before to the last exact one that are not exact.
            let last_exact = (0..=horizon).rev().find(|&t| exact[t as usize]);
            let mut want_gaps: Vec<Window> = Vec::new();
            for t in tl.not_before..=last_exact.unwrap_or(0) {
                if last_exact.is_none() || exact[t as usize] {
                    continue;
                }
                match want_gaps.last_mut() {
                    Some(w) if w.to + 1 == t => w.to = t,
                    _ => want_gaps.push(Window { from: t, to: t }),
                }
            }
            assert_eq!(timeline_gaps(&tl), want_gaps, "{ctx}");

            // The public path, with and without nearest.
            let target = rng.below(horizon + 1);
            let nearest = rng.below(2) == 0;
            let one = std::slice::from_ref(&tl);
            assert_eq!(recoverable_windows_all(&[], one).unwrap(), got, "{ctx}");
            let to = if exact[target as usize] {
                Some(target)
            } else if nearest {
                (0..target).rev().find(|&t| exact[t as usize])
            } else {
                None
            };
            match (resolve_all(&[], one, &opts(target, nearest)), to) {
                (Ok(Resolved::Timeline(p)), Some(to)) => {
                    let want = index.plan(target, to).unwrap();
                    assert_eq!(p, want, "{ctx}: target {target}");
                    assert_eq!((p.recovered_to, p.cut_after_ts), (to, to), "{ctx}");
                }
                (Err(Error::NotRecoverable { windows, .. }), None) => {
                    assert_eq!(windows, got, "{ctx}: target {target}");
                }
                (r, to) => panic!("{ctx}: target {target}: {r:?}, expected {to:?}"),
            }
        }
    }
}
