//! `restore`: a backup, or the state as of a second, back into a data directory.

use crate::access::RepoRef;
use std::path::PathBuf;

use kyrodb_backup_chain::{
    resolve_all, BackupView, PitrOptions, PitrPlan, Resolved, TimelinePlan, TimelineView,
};
use kyrodb_backup_datadir::migrate::{MetricEvidence, MetricSource};
use kyrodb_backup_datadir::target::Target;
use kyrodb_backup_format::engine::{survey_snapshot, DataDirManifest, DistanceMetric};
use kyrodb_backup_format::repo::{FileEntry, FileKind};
use kyrodb_backup_storage::{
    restore as restore_set, restore_backup, ChainStore, Expectation, PlannedContent, PlannedFile,
    Progress, RestoreSet, StoredBackup,
};
use serde::Serialize;

use crate::catalog::{
    builtin_chain, chain_view, check_builtin, extracted, open_repo, timeline_view, vanished,
    BuiltinBackup, Catalog,
};
use crate::error::{Error, Result};
use crate::model::{FileSize, Now};

/// What to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreSource {
    /// A backup (id or unique prefix of 8+ characters), of this tool or the built-in one.
    Backup(String),
    /// The state as of a Unix second (inclusive).
    PointInTime {
        /// The second.
        at: u64,
        /// When it cannot be rebuilt exactly, the latest second before it that can be.
        nearest: bool,
    },
}

/// What `restore` is asked to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(clippy::struct_excessive_bools)] // independent switches, one per flag of the command
pub struct RestoreOptions {
    /// The data directory to restore into.
    pub data_dir: PathBuf,
    /// What to restore.
    pub source: RestoreSource,
    /// Whether a data directory that holds files may be replaced.
    pub allow_clear: bool,
    /// Keep the previous contents beside the data dir instead of deleting them.
    pub keep_previous: bool,
    /// Check and report only; change nothing.
    pub dry_run: bool,
    /// The metric to migrate a restored legacy snapshot that stores none with (one that
    /// stores its metric is migrated with it).
    pub distance: Option<DistanceMetric>,
    /// Restore a legacy state's bytes as they are (for an older engine) instead of migrating
    /// it to the current layouts.
    pub as_is: bool,
}

impl RestoreOptions {
    /// Restores `source` into an empty (or missing) `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, source: RestoreSource) -> Self {
        Self {
            data_dir: data_dir.into(),
            source,
            allow_clear: false,
            keep_previous: false,
            dry_run: false,
            distance: None,
            as_is: false,
        }
    }
}

/// How a restored legacy state was migrated to the current layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Migrated {
    /// The metric of the migrated snapshot.
    pub distance: DistanceMetric,
    /// Where it came from: the snapshot (`stored`) or the options (`requested`).
    pub source: MetricSource,
}

/// What a restore did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup restored (for a point in time, the newest backup whose bytes were used).
    pub backup_id: String,
    /// The second asked for, for a point in time.
    pub point_in_time: Option<u64>,
    /// The Unix second the restored state reflects.
    pub recovered_to: u64,
    /// Live documents of the restored state.
    pub vector_count: u64,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The files written.
    pub files: Vec<FileSize>,
    /// Their bytes.
    pub bytes: u64,
    /// Whether the data dir held files that were replaced.
    pub replaced: bool,
    /// Where those were kept.
    pub previous: Option<PathBuf>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// How a legacy state was (or, dry, would be) migrated to the current layouts.
    pub migrated: Option<Migrated>,
    /// The archived timeline the state came from, for a point in time the continuous archive
    /// rebuilt (`backup_id` is then its base).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<String>,
    /// What could not be read in the backup directory, one line each.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Restores `opts.source` from `backup_dir` into `opts.data_dir`. The target is checked before
/// any other work (a non-empty one needs `allow_clear`; one a process uses is refused); the new
/// state is built beside it, checked, and swapped in atomically, so a failure at any point
/// leaves the target as it was. With `distance`, a restored legacy state is then migrated.
///
/// # Errors
///
/// [`Error::TargetNotEmpty`], [`Error::InUse`], [`Error::Locked`], [`Error::PointInTime`]
/// (a second that cannot be rebuilt exactly names the recoverable windows),
/// [`Error::MetricConflict`], [`Error::Damaged`] or [`Error::Format`] for damaged backups.
pub fn restore(
    backup_dir: impl Into<RepoRef>,
    opts: &RestoreOptions,
    now: Now,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let backup_dir = &backup_dir.into();
    let target = Target::check(&opts.data_dir, opts.allow_clear)?;
    let sopts = {
        let mut o = kyrodb_backup_storage::RestoreOptions::new(now.secs);
        o.keep_previous = opts.keep_previous;
        o.dry_run = opts.dry_run;
        o.as_is = opts.as_is;
        o.distance = opts.distance;
        o
    };
    let mut would_migrate = None;
    let mut warnings = Vec::new();
    let (r, recovered_to) = match &opts.source {
        RestoreSource::Backup(id) => {
            let catalog = Catalog::builtin_only(backup_dir);
            warnings.clone_from(&catalog.warnings);
            if let Some(b) = catalog.find_builtin(id) {
                let r = restore_builtin(b, &catalog.builtin, &target, &sopts, progress)?;
                (r, b.meta.timestamp)
            } else {
                let repo = open_repo(backup_dir)?;
                let b = repo.find(id)?;
                check_distance(b.manifest.distance, opts.distance)?;
                let store = repo.chain_store(&b.manifest.chain_id)?.trusting_seals();
                let gone = |e| vanished(&repo, std::slice::from_ref(&b), e);
                would_migrate = check_legacy(&store, &b, opts).map_err(gone)?;
                (
                    restore_backup(&store, &b, &target, &sopts, progress)
                        .map_err(|e| gone(e.into()))?,
                    b.manifest.timestamp,
                )
            }
        }
        RestoreSource::PointInTime { at, nearest } => {
            let repo = open_repo(backup_dir)?;
            let backups = repo.list()?.backups;
            let views: Vec<BackupView> = backups.iter().map(|b| chain_view(&b.manifest)).collect();
            let timelines = repo.archive_timelines()?;
            let tviews: Vec<TimelineView> = timelines.iter().map(timeline_view).collect();
            let resolved = resolve_all(
                &views,
                &tviews,
                &PitrOptions {
                    target: *at,
                    nearest: *nearest,
                },
            )?;
            let plan = match resolved {
                Resolved::Backups(plan) => plan,
                Resolved::Timeline(plan) => {
                    let (r, timeline) =
                        restore_archived(&repo, &timelines, &plan, &target, &sopts, progress)?;
                    return Ok(report(
                        opts,
                        r,
                        plan.recovered_to,
                        None,
                        warnings,
                        Some(timeline),
                    ));
                }
            };
            let snap_distance = plan.snapshot.as_ref().and_then(|s| {
                backups
                    .iter()
                    .find(|b| b.manifest.id == s.backup_id)
                    .and_then(|b| b.manifest.distance)
            });
            check_distance(snap_distance, opts.distance)?;
            let store = repo.chain_store(&plan.chain_id)?.trusting_seals();
            if let Some(s) = &plan.snapshot {
                if let Some(b) = backups.iter().find(|b| b.manifest.id == s.backup_id) {
                    would_migrate = check_legacy(&store, b, opts)?;
                }
            }
            let set = pitr_set(&store, &backups, &plan)?;
            let used: Vec<StoredBackup> = backups
                .iter()
                .filter(|b| b.manifest.chain_id == plan.chain_id)
                .cloned()
                .collect();
            (
                restore_set(&set, &target, &sopts, progress)
                    .map_err(|e| vanished(&repo, &used, e.into()))?,
                plan.recovered_to,
            )
        }
    };
    Ok(report(opts, r, recovered_to, would_migrate, warnings, None))
}

fn report(
    opts: &RestoreOptions,
    r: kyrodb_backup_storage::RestoreReport,
    recovered_to: u64,
    would_migrate: Option<Migrated>,
    warnings: Vec<String>,
    timeline: Option<String>,
) -> RestoreReport {
    let migrated = match r.migrated {
        Some((distance, source)) => Some(Migrated { distance, source }),
        None if r.dry_run => would_migrate,
        None => None,
    };
    RestoreReport {
        backup_id: r.backup_id,
        point_in_time: match opts.source {
            RestoreSource::PointInTime { at, .. } => Some(at),
            RestoreSource::Backup(_) => None,
        },
        recovered_to,
        vector_count: r.vector_count,
        data_dir: r.target,
        files: r
            .files
            .into_iter()
            .map(|(name, size)| FileSize { name, size })
            .collect(),
        bytes: r.bytes,
        replaced: r.replaced,
        previous: r.previous,
        dry_run: r.dry_run,
        migrated,
        timeline,
        warnings,
    }
}

/// Restores a point in time from an archived timeline: the base's snapshot, one WAL segment
/// of the archived frames after it up to the second, and a MANIFEST naming both. Returns the
/// storage report and the timeline.
fn restore_archived(
    repo: &kyrodb_backup_storage::Repository,
    timelines: &[kyrodb_backup_storage::ArchivedTimeline],
    plan: &TimelinePlan,
    target: &Target,
    sopts: &kyrodb_backup_storage::RestoreOptions,
    progress: &dyn Progress,
) -> Result<(kyrodb_backup_storage::RestoreReport, String)> {
    let tl = timelines
        .iter()
        .find(|t| t.id.to_string() == plan.timeline_id)
        .ok_or_else(|| Error::Damaged(format!("timeline {} vanished", plan.timeline_id)))?;
    let store = repo.archive_store(tl.id).trusting_seals();
    let base = match &plan.base {
        Some(b) => {
            let archived = tl
                .bases
                .iter()
                .find(|a| a.key == b.key)
                .ok_or_else(|| Error::Damaged(format!("base {} vanished", b.key)))?;
            Some(repo.load_base(archived)?)
        }
        None => None,
    };
    let pieces: Vec<kyrodb_backup_storage::ArchivedPiece> = plan
        .pieces
        .iter()
        .filter_map(|p| tl.pieces.iter().find(|a| a.key == p.key).cloned())
        .collect();
    // The last frame replayed: every planned piece but the last is replayed whole; the last
    // is cut at the first frame after the second.
    let mut last_seq = plan.start_seq;
    if let Some((tail, whole)) = pieces.split_last() {
        if let Some(p) = whole.last() {
            last_seq = last_seq.max(p.name.last_seq);
        }
        let piece = repo.read_piece(&tail.key, &tail.name)?;
        for f in &piece.frames {
            if f.timestamp > plan.cut_after_ts {
                break;
            }
            last_seq = last_seq.max(f.seq);
        }
    }
    let segment = format!("wal_{}.wal", plan.recovered_to.saturating_mul(1_000_000));
    let mut files = Vec::new();
    let mut snapshot_name = None;
    if let Some(m) = &base {
        let entry = m
            .files
            .iter()
            .find(|f| f.kind == FileKind::Snapshot)
            .ok_or_else(|| Error::Damaged(format!("base {} holds no snapshot", m.id)))?;
        snapshot_name = Some(entry.name.clone());
        files.push(PlannedFile {
            name: entry.name.clone(),
            content: PlannedContent::Stored {
                store: &store,
                entry,
                keep_frames: None,
            },
        });
    }
    files.push(PlannedFile {
        name: segment.clone(),
        content: PlannedContent::Archived {
            repo,
            pieces,
            skip_through: plan.start_seq,
            until_ts: plan.cut_after_ts,
        },
    });
    let manifest = DataDirManifest::modern(
        snapshot_name.clone(),
        snapshot_name.as_ref().map(|_| plan.start_seq),
        vec![segment],
        plan.recovered_to,
    );
    files.insert(
        0,
        PlannedFile {
            name: "MANIFEST".into(),
            content: PlannedContent::Generated(manifest.to_bytes()),
        },
    );
    let set = RestoreSet {
        backup_id: base
            .as_ref()
            .map_or_else(|| plan.timeline_id.clone(), |m| m.id.clone()),
        files,
        expect: Expectation::LastSeq(last_seq),
        also_check: Vec::new(),
    };
    Ok((
        restore_set(&set, target, sopts, progress)?,
        plan.timeline_id.clone(),
    ))
}

/// Restores a chain of the built-in tool: its archives extracted in order into staging,
/// checked first (checksums, decoding, the snapshot its MANIFEST names), then swapped in.
fn restore_builtin(
    b: &BuiltinBackup,
    all: &[BuiltinBackup],
    target: &Target,
    opts: &kyrodb_backup_storage::RestoreOptions,
    progress: &dyn Progress,
) -> Result<kyrodb_backup_storage::RestoreReport> {
    check_builtin(b, all)?;
    let chain = builtin_chain(b, all)?;
    let set = RestoreSet {
        backup_id: b.meta.id.clone(),
        files: extracted(&chain)?
            .into_iter()
            .map(|(name, (path, member))| PlannedFile {
                name,
                content: PlannedContent::FileRange {
                    path,
                    offset: member.offset,
                    len: member.len,
                },
            })
            .collect(),
        expect: Expectation::Recovers,
        also_check: Vec::new(),
    };
    Ok(restore_set(&set, target, opts, progress)?)
}

/// For a backup whose snapshot is legacy (version < 4): refuses, before anything is written,
/// when it stores no metric and none was given (naming the evidence an operator chooses one
/// by), and says how it will be migrated. `None` for a current snapshot or `as_is`.
fn check_legacy(
    store: &ChainStore,
    b: &StoredBackup,
    opts: &RestoreOptions,
) -> Result<Option<Migrated>> {
    let m = &b.manifest;
    let Some(snap) = m.snapshot.as_ref().filter(|s| s.version < 4 && !opts.as_is) else {
        return Ok(None);
    };
    if let Some(distance) = m.distance {
        return Ok(Some(Migrated {
            distance,
            source: MetricSource::Stored,
        }));
    }
    if let Some(distance) = opts.distance {
        return Ok(Some(Migrated {
            distance,
            source: MetricSource::Requested,
        }));
    }
    let entry = m
        .files
        .iter()
        .find(|f| f.kind == FileKind::Snapshot && f.name == snap.file)
        .ok_or_else(|| Error::Damaged(format!("backup {} lists no file {}", m.id, snap.file)))?;
    let survey = survey_snapshot(std::io::BufReader::with_capacity(
        1 << 20,
        store.reader(entry),
    ))
    .map_err(|e| Error::Damaged(format!("backup {}: {}: {e}", m.id, snap.file)))?;
    Err(Error::NeedsMetric(Box::new(MetricEvidence::of(
        &snap.file, &survey,
    ))))
}

/// Refuses a requested metric that contradicts the one a backup's snapshot stores.
fn check_distance(stored: Option<DistanceMetric>, requested: Option<DistanceMetric>) -> Result<()> {
    match (stored, requested) {
        (Some(s), Some(r)) if s != r => Err(Error::MetricConflict {
            stored: s,
            requested: r,
            in_backup: true,
        }),
        _ => Ok(()),
    }
}

/// The files that rebuild a point in time: the plan's snapshot and WAL segments (the last ones
/// cut), and a MANIFEST naming exactly those.
fn pitr_set<'a>(
    store: &'a ChainStore,
    backups: &'a [StoredBackup],
    plan: &PitrPlan,
) -> Result<RestoreSet<'a>> {
    let entry = |f: &kyrodb_backup_chain::PlannedFile| -> Result<&'a FileEntry> {
        backups
            .iter()
            .find(|b| b.manifest.id == f.backup_id)
            .and_then(|b| b.manifest.files.iter().find(|e| e.name == f.name))
            .ok_or_else(|| {
                Error::Damaged(format!("backup {} lists no file {}", f.backup_id, f.name))
            })
    };
    let mut files = Vec::new();
    let mut used = Vec::new();
    if let Some(s) = &plan.snapshot {
        files.push(PlannedFile {
            name: s.name.clone(),
            content: PlannedContent::Stored {
                store,
                entry: entry(s)?,
                keep_frames: None,
            },
        });
        used.push(s.backup_id.clone());
    }
    for seg in &plan.segments {
        files.push(PlannedFile {
            name: seg.file.name.clone(),
            content: PlannedContent::Stored {
                store,
                entry: entry(&seg.file)?,
                keep_frames: (!seg.whole).then_some(seg.keep_entries),
            },
        });
        used.push(seg.file.backup_id.clone());
    }
    let manifest = DataDirManifest::modern(
        plan.snapshot.as_ref().map(|s| s.name.clone()),
        plan.snapshot.as_ref().map(|_| plan.start_seq),
        plan.segments.iter().map(|s| s.file.name.clone()).collect(),
        plan.recovered_to,
    );
    files.insert(
        0,
        PlannedFile {
            name: "MANIFEST".into(),
            content: PlannedContent::Generated(manifest.to_bytes()),
        },
    );
    // Report the newest backup the bytes come from.
    let backup_id = backups
        .iter()
        .find(|b| used.contains(&b.manifest.id))
        .or_else(|| {
            backups
                .iter()
                .find(|b| b.manifest.chain_id == plan.chain_id)
        })
        .map(|b| b.manifest.id.clone())
        .unwrap_or_default();
    Ok(RestoreSet {
        backup_id,
        files,
        expect: Expectation::LastSeq(plan.last_seq),
        also_check: Vec::new(),
    })
}
