//! Text (and table) renderings of the commands' reports. JSON is the reports serialized.

use std::fmt::Write as _;
use std::path::Path;

use kyrodb_backup_ops::types::{CurrentEngine, MetricSource};
use kyrodb_backup_ops::{
    BackupSummary, BuiltinShowReport, ChainLink, CheckReport, CreateReport, GoldenCheckReport,
    GoldenCreateReport, ListReport, MigrateReport, PruneReport, RestoreReport, ShowReport, Shown,
    VerifyReport, Windows,
};

use crate::output::{human_age, human_bytes, outln, print_table, utc};

/// One line summary of a backup's recorded state.
pub fn state_line(b: &BackupSummary) -> String {
    let dimension = b
        .dimension
        .map(|d| format!(", dimension {d}"))
        .unwrap_or_default();
    let metric = match (&b.distance, &b.snapshot) {
        (Some(d), _) => d.clone(),
        (None, Some(s)) if s.version.is_some_and(|v| v < 4) => format!(
            "metric unknown ({} snapshot stores none; restore with --distance)",
            s.layout.as_deref().unwrap_or("legacy")
        ),
        (None, _) => "metric not recorded (no snapshot yet)".to_string(),
    };
    format!("{} vectors{dimension}, {metric}", b.vector_count)
}

pub fn create(r: &CreateReport) {
    let b = &r.backup;
    if r.dry_run {
        outln!(
            "would create a {} backup: nothing was written",
            b.backup_type.to_lowercase()
        );
        outln!(
            "  would capture {} files, {} from {}",
            r.files,
            human_bytes(b.size_bytes),
            r.source
        );
        outln!(
            "  would add     {} to the repository ({} new chunks and the manifest; {} chunks already in the chain)",
            human_bytes(b.stored_bytes),
            r.stats.new_chunks,
            r.stats.reused_chunks
        );
        outln!("  state         {}", state_line(b));
        return;
    }
    outln!("created {} backup {}", b.backup_type.to_lowercase(), b.id);
    outln!(
        "  captured {} files, {} from {}",
        r.files,
        human_bytes(b.size_bytes),
        r.source
    );
    outln!(
        "  stored   {} in {} new chunks ({} already in the chain)",
        human_bytes(b.stored_bytes),
        r.stats.new_chunks,
        r.stats.reused_chunks
    );
    if r.stats.unchanged_files > 0 {
        outln!(
            "  reused   {} unchanged files ({}) from the reference without reading them",
            r.stats.unchanged_files,
            human_bytes(r.stats.unchanged_bytes)
        );
    }
    outln!("  state    {}", state_line(b));
    if let Some(g) = &b.golden {
        outln!(
            "  golden   {} queries, exact top-{} over {} documents{} ({:.2} s)",
            g.queries,
            g.k,
            g.searched,
            if g.searched < b.vector_count {
                " (a sample)"
            } else {
                ""
            },
            r.golden_seconds.unwrap_or(0.0)
        );
    }
    for s in &r.skipped {
        outln!("  skipped  {} ({})", s.name, s.reason);
    }
}

/// The last drill of a backup, in a few words.
fn drill_text(d: &kyrodb_backup_ops::LastDrill) -> String {
    let mut s = format!(
        "{} {}",
        if d.passed { "passed" } else { "FAILED" },
        utc(d.timestamp)
    );
    if let (Some(secs), Some(rate)) = (d.restore_seconds, d.restore_mb_per_s) {
        let _ = write!(s, ", restore {secs:.2} s ({rate:.0} MB/s)");
    }
    if let Some(q) = d.golden_queries {
        let _ = write!(s, ", {q} golden queries");
    }
    if let Some(p) = &d.problem {
        let _ = write!(s, ": {p}");
    }
    s
}

pub fn drill(r: &kyrodb_backup_ops::DrillReport) {
    outln!(
        "{}: drill of backup {}{}",
        if r.passed { "PASSED" } else { "FAILED" },
        r.backup_id,
        r.point_in_time
            .map(|t| format!(" at {} ({t})", utc(t)))
            .unwrap_or_default()
    );
    let p = &r.phases;
    outln!(
        "  restore  {:.2} s, {} at {:.0} MB/s, every byte checked",
        p.restore_seconds,
        human_bytes(r.bytes),
        r.restore_mb_per_s
    );
    outln!(
        "  check    {:.2} s, {} documents recovered from the restored files",
        p.check_seconds,
        r.vector_count
    );
    let g = &r.golden;
    if g.queries > 0 {
        outln!(
            "  golden   {:.2} s, {} queries of top-{} from the {}",
            p.golden_seconds,
            g.queries,
            g.k,
            if g.source == "file" {
                "golden file"
            } else {
                "backup"
            }
        );
    } else {
        outln!("  golden   none recorded");
    }
    outln!(
        "  cleanup  {:.2} s, removed {}",
        p.cleanup_seconds,
        r.scratch.display()
    );
    outln!("  total    {:.2} s", p.total_seconds);
    if let Some(problem) = &r.problem {
        outln!("  MISMATCH: {problem}");
    }
    if let Some(key) = &r.recorded {
        outln!("  recorded as {key}");
    }
}

pub fn config(r: &kyrodb_backup_ops::ConfigReport) {
    outln!(
        "{}: golden queries per backup {}",
        r.location,
        if r.golden_queries == 0 {
            "none (create --golden N, or config --golden N)".to_string()
        } else {
            r.golden_queries.to_string()
        }
    );
}

pub fn list(r: &ListReport, dir: &Path, boxed: bool) {
    list_backups(r, dir, boxed);
    for t in &r.timelines {
        outln!(
            "archived WAL: timeline {} (since {}), frames {} in {} pieces; recoverable {}{}",
            t.timeline,
            utc(t.started_at),
            t.last_seq
                .map_or_else(|| "none".into(), |l| format!("to {l}")),
            t.pieces,
            windows_text(&t.recoverable_windows),
            if t.gaps.is_empty() {
                String::new()
            } else {
                format!("; gaps {}", windows_text(&t.gaps))
            }
        );
    }
}

fn list_backups(r: &ListReport, dir: &Path, boxed: bool) {
    if r.backups.is_empty() {
        outln!("no backups in {}", dir.display());
        return;
    }
    let table: Vec<Vec<String>> = r
        .backups
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                utc(b.timestamp),
                format!(
                    "{}{}",
                    b.backup_type,
                    if b.format.is_some() {
                        " (built-in)"
                    } else {
                        ""
                    }
                ),
                human_bytes(b.size_bytes),
                b.vector_count.to_string(),
                b.distance.clone().unwrap_or_else(|| "unknown".into()),
                b.last_drill.as_ref().map_or_else(
                    || "-".to_string(),
                    |d| {
                        let day: String = utc(d.timestamp).chars().take(10).collect();
                        format!("{} {day}", if d.passed { "passed" } else { "FAILED" })
                    },
                ),
                b.description.clone(),
            ]
        })
        .collect();
    print_table(
        boxed,
        &[
            "ID",
            "TAKEN (UTC)",
            "TYPE",
            "SIZE",
            "VECTORS",
            "METRIC",
            "LAST DRILL",
            "DESCRIPTION",
        ],
        &table,
    );
}

pub fn show(r: &Shown, boxed: bool) {
    match r {
        Shown::Repository(r) => show_repository(r, boxed),
        Shown::Builtin(r) => show_builtin(r),
        Shown::Timeline(r) => show_timeline(r),
    }
}

fn windows_text(ws: &[kyrodb_backup_ops::types::Window]) -> String {
    if ws.is_empty() {
        return "none".into();
    }
    ws.iter()
        .map(|w| {
            if w.to == u64::MAX {
                format!("{} ({}) onward", w.from, utc(w.from))
            } else {
                format!("{} ({}) to {} ({})", w.from, utc(w.from), w.to, utc(w.to))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_timeline(r: &kyrodb_backup_ops::TimelineReport) {
    outln!("timeline    {} (continuous archive)", r.timeline);
    outln!("started     {} ({})", utc(r.started_at), r.started_at);
    if let (Some(a), Some(b)) = (r.first_seq, r.last_seq) {
        outln!(
            "frames      {a} to {b} in {} pieces ({})",
            r.pieces,
            human_bytes(r.piece_bytes)
        );
    } else {
        outln!("frames      none yet");
    }
    outln!("bases       {}", r.bases.len());
    for b in &r.bases {
        outln!(
            "  {}  snapshot of {} through frame {}",
            b.id,
            utc(b.snapshot_timestamp),
            b.last_wal_seq
        );
    }
    if let Some(h) = &r.heartbeat {
        outln!(
            "heartbeat   {} by {} (pid {}): complete through frame {}, {}s behind, {} pending",
            utc(h.written_at),
            h.host,
            h.pid,
            h.last_seq,
            h.lag_seconds,
            human_bytes(h.pending_bytes)
        );
    }
    outln!("recoverable {}", windows_text(&r.recoverable_windows));
    if !r.gaps.is_empty() {
        outln!("gaps        {}", windows_text(&r.gaps));
    }
}

fn show_builtin(r: &BuiltinShowReport) {
    let b = &r.backup;
    outln!(
        "backup      {} (made by the engine's built-in backup tool)",
        b.id
    );
    outln!("type        {}", b.backup_type);
    outln!("taken       {} ({})", utc(b.timestamp), b.timestamp);
    if !b.description.is_empty() {
        outln!("description {}", b.description);
    }
    outln!(
        "archive     {} ({})",
        r.archive.display(),
        human_bytes(b.size_bytes)
    );
    outln!("files");
    for m in &r.files {
        outln!("  {:<32} {:>10}", m.name, human_bytes(m.size));
    }
    outln!("chain (restored by extracting these archives in order)");
    print_chain(&r.chain, &b.id);
}

fn show_repository(r: &ShowReport, boxed: bool) {
    let b = &r.backup;
    outln!("backup      {}", b.id);
    outln!("type        {}", b.backup_type);
    outln!("taken       {} ({})", utc(b.timestamp), b.timestamp);
    if !b.description.is_empty() {
        outln!("description {}", b.description);
    }
    outln!("source      {}", r.source);
    outln!("checksum    {}", b.checksum);
    outln!("state       {}", state_line(b));
    if let Some(g) = &b.golden {
        outln!(
            "golden      {} queries, exact top-{} over {} documents",
            g.queries,
            g.k,
            g.searched
        );
    }
    outln!(
        "last drill  {}",
        b.last_drill
            .as_ref()
            .map_or_else(|| "never".to_string(), drill_text)
    );
    outln!(
        "size        {} captured, {} stored by this backup",
        human_bytes(b.size_bytes),
        human_bytes(b.stored_bytes)
    );
    if let Some(s) = &b.snapshot {
        outln!(
            "snapshot    {} ({}, {} documents, taken {}, last_wal_seq {})",
            s.file,
            s.layout.as_deref().unwrap_or("?"),
            s.doc_count.unwrap_or(0),
            utc(s.timestamp.unwrap_or(0)),
            s.last_wal_seq.unwrap_or(0)
        );
    } else {
        outln!("snapshot    none");
    }
    if let Some(w) = &b.wal {
        outln!(
            "wal         {} entries, seq {}..={}, {} .. {}",
            w.entries,
            w.first_seq,
            w.last_seq,
            utc(w.first_timestamp),
            utc(w.last_timestamp)
        );
    } else {
        outln!("wal         no entries");
    }
    outln!("files");
    let rows: Vec<Vec<String>> = r
        .files
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                human_bytes(f.size),
                f.chunks.to_string(),
                f.hash.to_hex(),
            ]
        })
        .collect();
    print_table(boxed, &["FILE", "SIZE", "CHUNKS", "XXH3-128"], &rows);
    for s in &r.skipped {
        outln!("  skipped {} ({})", s.name, s.reason);
    }
    match &r.recoverable_windows {
        Windows::Known(w) if w.is_empty() => {
            outln!("point in time: no second of this chain is recoverable");
        }
        Windows::Known(w) => {
            outln!("point in time: recoverable windows of this chain (inclusive)");
            for w in w {
                let to = if w.to == u64::MAX {
                    "…".to_string()
                } else {
                    utc(w.to)
                };
                outln!("  {} .. {}", utc(w.from), to);
            }
        }
        Windows::Unknown(e) => outln!("point in time: {e}"),
    }
    outln!("chain");
    print_chain(&r.chain, &b.id);
}

/// A chain, oldest first, the shown backup marked with `*`.
fn print_chain(chain: &[ChainLink], current: &str) {
    for c in chain {
        let marker = if c.id == current { "*" } else { " " };
        outln!(
            "  {marker} {}  {}  {}",
            c.id,
            utc(c.timestamp),
            c.backup_type
        );
    }
}

pub fn restore(r: &RestoreReport) {
    let verb = if r.dry_run {
        "would restore"
    } else {
        "restored"
    };
    let what = match r.point_in_time {
        Some(_) => format!(
            "the state as of {} ({}) from backup {}",
            utc(r.recovered_to),
            r.recovered_to,
            r.backup_id
        ),
        None => format!("backup {} ({})", r.backup_id, utc(r.recovered_to)),
    };
    outln!(
        "{verb} {what} into {}: {} files, {}, {} vectors",
        r.data_dir.display(),
        r.files.len(),
        human_bytes(r.bytes),
        r.vector_count
    );
    if let Some(m) = r.migrated {
        let verb = if r.dry_run {
            "would migrate"
        } else {
            "migrated"
        };
        let why = match m.source {
            MetricSource::Stored => "stored in the snapshot",
            MetricSource::Requested => "from --distance",
            MetricSource::Assumed => "assumed",
        };
        outln!(
            "{verb} the restored legacy state to the current format (snapshot V4, WAL W3, JSON MANIFEST) with metric {} ({why})",
            m.distance
        );
    }
    if r.replaced {
        match &r.previous {
            Some(p) => outln!("previous contents kept at {}", p.display()),
            None if r.dry_run => outln!("the previous contents would be removed"),
            None => outln!("previous contents removed"),
        }
    }
}

pub fn verify(r: &VerifyReport) {
    for c in &r.backups {
        if c.ok {
            outln!(
                "ok       {}  {} files, {} read, {} vectors",
                c.id,
                c.files_checked,
                human_bytes(c.bytes_checked),
                c.vector_count.unwrap_or(0)
            );
            match c.current_engine {
                Some(CurrentEngine::Migrates) => outln!(
                    "  note: a legacy state that stores its metric: restore migrates it to the current format"
                ),
                Some(CurrentEngine::NeedsMetric) => outln!(
                    "  note: a legacy state that stores no metric: restore needs --distance (or --as-is for an older engine)"
                ),
                _ => {}
            }
        } else {
            outln!("DAMAGED  {}", c.id);
            for p in &c.problems {
                outln!(
                    "  {}{}",
                    p.file
                        .as_ref()
                        .map(|f| format!("{f}: "))
                        .unwrap_or_default(),
                    p.message
                );
            }
        }
    }
    for c in &r.builtin {
        if let (true, Some(n)) = (c.ok, c.vector_count) {
            outln!(
                "ok       {}  built-in backup, chain recovers to {n} vectors",
                c.id
            );
        } else {
            let why: Vec<&str> = c.problems.iter().map(|p| p.message.as_str()).collect();
            outln!("DAMAGED  {}  built-in backup\n  {}", c.id, why.join("; "));
        }
    }
    for u in &r.unreadable {
        outln!("DAMAGED  {}: {}", u.path.display(), u.problem);
    }
    for t in &r.archive {
        if t.ok {
            outln!(
                "ok       timeline {}: {} pieces ({} frames), {} bases",
                t.timeline,
                t.pieces,
                t.frames,
                t.bases
            );
        } else {
            outln!("DAMAGED  timeline {}", t.timeline);
            for p in &t.problems {
                outln!("  {}: {}", p.file.as_deref().unwrap_or("-"), p.message);
            }
        }
    }
    if r.backups.is_empty()
        && r.unreadable.is_empty()
        && r.builtin.is_empty()
        && r.archive.is_empty()
    {
        outln!("no backups to verify");
    }
}

pub fn prune(r: &PruneReport) {
    for k in &r.kept {
        outln!(
            "keep   {}  {}  {}",
            k.id,
            utc(k.timestamp),
            k.reasons.join(", ")
        );
    }
    for (id, ts) in r.pruned.iter().zip(&r.pruned_timestamps) {
        outln!("prune  {id}  {}", utc(*ts));
    }
    let verb = if r.dry_run { "would prune" } else { "pruned" };
    outln!(
        "{verb} {} of {} backups, {} chunks, {} freed{}",
        r.pruned.len(),
        r.backups_before,
        r.deleted_chunks,
        human_bytes(r.bytes_freed),
        if r.chains_removed.is_empty() {
            String::new()
        } else {
            format!(", {} chains removed", r.chains_removed.len())
        }
    );
    for c in &r.chains_not_collected {
        outln!("chain {}: chunks not collected ({})", c.chain_id, c.reason);
    }
    if let Some(a) = &r.archive {
        let verb = if r.dry_run { "would remove" } else { "removed" };
        outln!(
            "archived WAL kept restorable from {} ({}): {verb} {} pieces, {} bases, {} chunks, {} timelines",
            a.plan.window_from,
            utc(a.plan.window_from),
            a.plan.pieces_removed.len(),
            a.plan.bases_removed.len(),
            a.chunks_removed,
            a.plan.timelines_removed.len()
        );
        for t in &a.chunks_deferred {
            outln!("timeline {t}: chunks not collected (an archiver is storing a base)");
        }
    }
}

pub fn migrate(r: &MigrateReport) {
    if let Some(s) = &r.snapshot {
        outln!(
            "snapshot  {} ({}, {} documents, dimension {}, taken {})",
            s.file,
            s.layout,
            s.documents,
            s.dimension,
            utc(s.timestamp)
        );
        outln!(
            "norms     {} of {} vectors ({:.1}%) have unit L2 norm (within 1e-3): {}",
            s.unit_norm,
            s.documents,
            s.unit_norm_share * 100.0,
            s.suggestion
        );
    } else {
        outln!("snapshot  none (the state is its WAL)");
    }
    match (&r.distance, r.distance_source) {
        (Some(m), Some(MetricSource::Stored)) => outln!("metric    {m} (stored in the snapshot)"),
        (Some(m), Some(MetricSource::Requested)) => outln!("metric    {m} (from --distance)"),
        (Some(m), Some(MetricSource::Assumed)) => {
            outln!("metric    {m} (ASSUMED: the snapshot stores none and no --distance was given)");
        }
        _ => {}
    }
    outln!(
        "wal       {} entries read, {} written as W3 (the rest are already in the snapshot)",
        r.wal_entries_read,
        r.wal_entries_written
    );
    let dir = r.data_dir.display();
    if r.already_current {
        outln!("nothing to do: {dir} is already in the current format");
    } else if r.dry_run {
        outln!(
            "would migrate {dir} ({} vectors; checked: the migrated state replays identically)",
            r.vector_count
        );
    } else {
        outln!(
            "migrated {dir} ({} vectors, replaying identically)",
            r.vector_count
        );
        if let Some(p) = &r.previous {
            outln!("legacy files kept at {}", p.display());
        }
        outln!("validate with `kyrodb_backup golden check` before resuming traffic");
    }
}

pub fn golden_create(r: &GoldenCreateReport) {
    outln!(
        "wrote {}: {} queries, exact top-{} under {} over {} vectors of dimension {} ({:.2} s)",
        r.out.display(),
        r.queries,
        r.k,
        r.metric,
        r.count,
        r.dimension,
        r.seconds
    );
}

pub fn golden_check(r: &GoldenCheckReport) {
    let g = &r.report;
    if let Some((file, dir)) = r.dimension_differs {
        outln!("MISMATCH: the golden file has dimension {file}, the data dir {dir}");
        return;
    }
    if g.ok {
        outln!(
            "ok: {} queries, top-{} under {} over {} vectors: ids, order and scores match",
            g.queries,
            r.k,
            r.metric,
            r.count
        );
        return;
    }
    if let Some((want, found)) = g.metric_differs {
        outln!("MISMATCH: the golden file was made with {want}, the data dir uses {found}");
    }
    if let Some((want, found)) = g.count_differs {
        outln!("note: the golden file saw {want} vectors, the data dir has {found}");
    }
    if let Some(m) = &g.first_mismatch {
        let show = |x: Option<(u64, f32)>| {
            x.map_or_else(
                || "nothing".to_string(),
                |(id, s)| format!("id {id} score {s:.6}"),
            )
        };
        outln!(
            "MISMATCH: query {} (document {}) differs at rank {}: expected {}, found {}",
            m.query,
            m.source_id,
            m.rank + 1,
            show(m.expected),
            show(m.found)
        );
    }
}

pub fn check(r: &CheckReport, dir: &Path) {
    if let Some(max) = r.max_age_seconds {
        if let (Some(id), Some(age)) = (&r.newest_id, r.age_seconds) {
            outln!(
                "{}: newest backup {id} is {} old (limit {})",
                if age <= max { "OK" } else { "ALERT" },
                human_age(age),
                human_age(max)
            );
        } else {
            outln!("ALERT: no backup in {}", dir.display());
        }
    }
    if let Some(a) = &r.archive {
        match &a.problem {
            None => outln!(
                "OK: archived WAL of timeline {} is {} behind (limit {}); last frame {}",
                a.timeline.as_deref().unwrap_or("-"),
                human_age(a.lag_seconds.unwrap_or(0)),
                human_age(a.max_lag_seconds),
                a.last_seq
            ),
            Some(p) => outln!(
                "ALERT: archived WAL in {}: {p} (limit {})",
                dir.display(),
                human_age(a.max_lag_seconds)
            ),
        }
    }
    if let Some(d) = &r.drill {
        match (&d.problem, &d.backup_id, d.age_seconds) {
            (None, Some(id), Some(age)) => outln!(
                "OK: the last restore drill that passed (backup {id}) ran {} ago (limit {}){}",
                human_age(age),
                human_age(d.max_age_seconds),
                if d.failed_since > 0 {
                    format!("; {} failed since", d.failed_since)
                } else {
                    String::new()
                }
            ),
            (p, ..) => outln!(
                "ALERT: restore drills in {}: {} (limit {})",
                dir.display(),
                p.as_deref().unwrap_or("none passed"),
                human_age(d.max_age_seconds)
            ),
        }
    }
}

/// One line for an event of `archive` (status lines only when `verbose`).
pub(crate) fn archive_event(e: &kyrodb_backup_ops::ArchiveEvent, verbose: bool) -> Option<String> {
    use kyrodb_backup_ops::ArchiveEvent as E;
    Some(match e {
        E::Timeline {
            timeline,
            reason,
            next_seq,
        } => {
            let why = match reason.as_str() {
                "new" => "a new timeline",
                "resumed" => "resuming timeline",
                _ => "the data dir's history is not the archived one: a new timeline",
            };
            format!("archiving: {why} {timeline}, from WAL frame {next_seq}")
        }
        E::Gap(g) => format!(
            "warning: gap in timeline {}: frames after {} were compacted away while nothing archived them; seconds {} ({}) to {} ({}) cannot be restored exactly; a new base is taken from the snapshot after frame {}",
            g.timeline,
            g.after_seq,
            g.from,
            crate::output::utc(g.from),
            g.to,
            crate::output::utc(g.to),
            g.resumes_after_seq
        ),
        E::Base {
            snapshot,
            last_wal_seq,
            stored_bytes,
            seconds,
            ..
        } => format!(
            "base stored: {snapshot} (through frame {last_wal_seq}), {} new in {seconds:.1}s",
            human_bytes(*stored_bytes)
        ),
        E::Merged { pieces, into, .. } if verbose => format!("merged {pieces} pieces into {into}"),
        E::Status(s) if verbose => format!(
            "status: frame {} stored, lag {}s, {} pending, {} pieces, {} requests",
            s.last_seq,
            s.lag_seconds,
            human_bytes(s.pending_bytes),
            s.pieces,
            s.requests
        ),
        E::Warning { message } => format!("warning: {message}"),
        _ => return None,
    })
}

/// `archive`, when stopped.
pub(crate) fn archive(r: &kyrodb_backup_ops::ArchiveReport) {
    outln!(
        "archive stopped: {} frames in {} pieces ({}), {} bases, {} merges; last frame {} of timeline {}",
        r.status.frames,
        r.status.pieces,
        human_bytes(r.status.bytes),
        r.status.bases,
        r.status.merges,
        r.status.last_seq,
        r.status.timeline
    );
    for g in &r.gaps {
        outln!("gap: {} to {} in timeline {}", g.from, g.to, g.timeline);
    }
}

/// `copy`: a line per backup, then the totals.
pub(crate) fn copy(r: &kyrodb_backup_ops::CopyReport) {
    for b in &r.backups {
        outln!("{:<8} {}", b.status, b.id);
    }
    outln!(
        "{} to {}: {} backups copied, {} already there; {} chunks copied ({}), {} already there",
        r.from,
        r.to,
        r.backups.iter().filter(|b| b.status == "copied").count(),
        r.backups.iter().filter(|b| b.status == "present").count(),
        r.chunks_copied,
        human_bytes(r.bytes_copied),
        r.chunks_present
    );
}

pub(crate) fn init(r: &kyrodb_backup_ops::InitReport) {
    if r.encrypted {
        outln!(
            "made an encrypted repository at {} (key slot {}); keep the passphrase safe: without it the backups cannot be read",
            r.location,
            r.key_slot.as_deref().unwrap_or("?")
        );
    } else {
        outln!("made a repository at {}", r.location);
    }
}

pub(crate) fn key_list(r: &kyrodb_backup_ops::KeyListReport) {
    for s in &r.slots {
        let when = if s.created == 0 {
            "-".to_string()
        } else {
            crate::output::utc(s.created)
        };
        outln!(
            "{} {}  added {}  argon2id {} KiB, {} passes, {} lanes{}",
            if s.current { "*" } else { " " },
            s.id,
            when,
            s.kdf.memory_kib,
            s.kdf.iterations,
            s.kdf.parallelism,
            s.problem
                .as_ref()
                .map(|p| format!("  UNUSABLE: {p}"))
                .unwrap_or_default()
        );
    }
    outln!(
        "{} key slot(s) of {} (* = the one this passphrase opens)",
        r.slots.len(),
        r.location
    );
}

pub(crate) fn key_change(r: &kyrodb_backup_ops::KeyChangeReport) {
    if let Some(a) = &r.added {
        outln!("added key slot {a} to {}", r.location);
    }
    if let Some(d) = &r.removed {
        outln!("removed key slot {d} from {}", r.location);
    }
}
