//! Text (and table) renderings of the commands' reports. JSON is the reports serialized.

use std::path::Path;

use kyrodb_backup_ops::types::{CurrentEngine, MetricSource};
use kyrodb_backup_ops::{
    BackupSummary, BuiltinShowReport, ChainLink, CheckReport, CreateReport, GoldenCheckReport,
    GoldenCreateReport, ListReport, MigrateReport, PruneReport, RestoreReport, ShowReport, Shown,
    VerifyReport, Windows,
};

use crate::output::{human_age, human_bytes, print_table, utc};

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
    println!("created {} backup {}", b.backup_type.to_lowercase(), b.id);
    println!(
        "  captured {} files, {} from {}",
        r.files,
        human_bytes(b.size_bytes),
        r.source
    );
    println!(
        "  stored   {} in {} new chunks ({} already in the chain)",
        human_bytes(b.stored_bytes),
        r.stats.new_chunks,
        r.stats.reused_chunks
    );
    if r.stats.unchanged_files > 0 {
        println!(
            "  reused   {} unchanged files ({}) from the reference without reading them",
            r.stats.unchanged_files,
            human_bytes(r.stats.unchanged_bytes)
        );
    }
    println!("  state    {}", state_line(b));
    for s in &r.skipped {
        println!("  skipped  {} ({})", s.name, s.reason);
    }
}

pub fn list(r: &ListReport, dir: &Path, boxed: bool) {
    if r.backups.is_empty() {
        println!("no backups in {}", dir.display());
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
            "DESCRIPTION",
        ],
        &table,
    );
}

pub fn show(r: &Shown, boxed: bool) {
    match r {
        Shown::Repository(r) => show_repository(r, boxed),
        Shown::Builtin(r) => show_builtin(r),
    }
}

fn show_builtin(r: &BuiltinShowReport) {
    let b = &r.backup;
    println!(
        "backup      {} (made by the engine's built-in backup tool)",
        b.id
    );
    println!("type        {}", b.backup_type);
    println!("taken       {} ({})", utc(b.timestamp), b.timestamp);
    if !b.description.is_empty() {
        println!("description {}", b.description);
    }
    println!(
        "archive     {} ({})",
        r.archive.display(),
        human_bytes(b.size_bytes)
    );
    println!("files");
    for m in &r.files {
        println!("  {:<32} {:>10}", m.name, human_bytes(m.size));
    }
    println!("chain (restored by extracting these archives in order)");
    print_chain(&r.chain, &b.id);
}

fn show_repository(r: &ShowReport, boxed: bool) {
    let b = &r.backup;
    println!("backup      {}", b.id);
    println!("type        {}", b.backup_type);
    println!("taken       {} ({})", utc(b.timestamp), b.timestamp);
    if !b.description.is_empty() {
        println!("description {}", b.description);
    }
    println!("source      {}", r.source);
    println!("checksum    {}", b.checksum);
    println!("state       {}", state_line(b));
    println!(
        "size        {} captured, {} stored by this backup",
        human_bytes(b.size_bytes),
        human_bytes(b.stored_bytes)
    );
    if let Some(s) = &b.snapshot {
        println!(
            "snapshot    {} ({}, {} documents, taken {}, last_wal_seq {})",
            s.file,
            s.layout.as_deref().unwrap_or("?"),
            s.doc_count.unwrap_or(0),
            utc(s.timestamp.unwrap_or(0)),
            s.last_wal_seq.unwrap_or(0)
        );
    } else {
        println!("snapshot    none");
    }
    if let Some(w) = &b.wal {
        println!(
            "wal         {} entries, seq {}..={}, {} .. {}",
            w.entries,
            w.first_seq,
            w.last_seq,
            utc(w.first_timestamp),
            utc(w.last_timestamp)
        );
    } else {
        println!("wal         no entries");
    }
    println!("files");
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
        println!("  skipped {} ({})", s.name, s.reason);
    }
    match &r.recoverable_windows {
        Windows::Known(w) if w.is_empty() => {
            println!("point in time: no second of this chain is recoverable");
        }
        Windows::Known(w) => {
            println!("point in time: recoverable windows of this chain (inclusive)");
            for w in w {
                let to = if w.to == u64::MAX {
                    "…".to_string()
                } else {
                    utc(w.to)
                };
                println!("  {} .. {}", utc(w.from), to);
            }
        }
        Windows::Unknown(e) => println!("point in time: {e}"),
    }
    println!("chain");
    print_chain(&r.chain, &b.id);
}

/// A chain, oldest first, the shown backup marked with `*`.
fn print_chain(chain: &[ChainLink], current: &str) {
    for c in chain {
        let marker = if c.id == current { "*" } else { " " };
        println!(
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
    println!(
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
        println!(
            "{verb} the restored legacy state to the current format (snapshot V4, WAL W3, JSON MANIFEST) with metric {} ({why})",
            m.distance
        );
    }
    if r.replaced {
        match &r.previous {
            Some(p) => println!("previous contents kept at {}", p.display()),
            None if r.dry_run => println!("the previous contents would be removed"),
            None => println!("previous contents removed"),
        }
    }
}

pub fn verify(r: &VerifyReport) {
    for c in &r.backups {
        if c.ok {
            println!(
                "ok       {}  {} files, {} read, {} vectors",
                c.id,
                c.files_checked,
                human_bytes(c.bytes_checked),
                c.vector_count.unwrap_or(0)
            );
            match c.current_engine {
                Some(CurrentEngine::Migrates) => println!(
                    "  note: a legacy state that stores its metric: restore migrates it to the current format"
                ),
                Some(CurrentEngine::NeedsMetric) => println!(
                    "  note: a legacy state that stores no metric: restore needs --distance (or --as-is for an older engine)"
                ),
                _ => {}
            }
        } else {
            println!("DAMAGED  {}", c.id);
            for p in &c.problems {
                println!(
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
            println!(
                "ok       {}  built-in backup, chain recovers to {n} vectors",
                c.id
            );
        } else {
            let why: Vec<&str> = c.problems.iter().map(|p| p.message.as_str()).collect();
            println!("DAMAGED  {}  built-in backup\n  {}", c.id, why.join("; "));
        }
    }
    for u in &r.unreadable {
        println!("DAMAGED  {}: {}", u.path.display(), u.problem);
    }
    if r.backups.is_empty() && r.unreadable.is_empty() && r.builtin.is_empty() {
        println!("no backups to verify");
    }
}

pub fn prune(r: &PruneReport) {
    for k in &r.kept {
        println!(
            "keep   {}  {}  {}",
            k.id,
            utc(k.timestamp),
            k.reasons.join(", ")
        );
    }
    for (id, ts) in r.pruned.iter().zip(&r.pruned_timestamps) {
        println!("prune  {id}  {}", utc(*ts));
    }
    let verb = if r.dry_run { "would prune" } else { "pruned" };
    println!(
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
        println!("chain {}: chunks not collected ({})", c.chain_id, c.reason);
    }
}

pub fn migrate(r: &MigrateReport) {
    if let Some(s) = &r.snapshot {
        println!(
            "snapshot  {} ({}, {} documents, dimension {}, taken {})",
            s.file,
            s.layout,
            s.documents,
            s.dimension,
            utc(s.timestamp)
        );
        println!(
            "norms     {} of {} vectors ({:.1}%) have unit L2 norm (within 1e-3): {}",
            s.unit_norm,
            s.documents,
            s.unit_norm_share * 100.0,
            s.suggestion
        );
    } else {
        println!("snapshot  none (the state is its WAL)");
    }
    match (&r.distance, r.distance_source) {
        (Some(m), Some(MetricSource::Stored)) => println!("metric    {m} (stored in the snapshot)"),
        (Some(m), Some(MetricSource::Requested)) => println!("metric    {m} (from --distance)"),
        (Some(m), Some(MetricSource::Assumed)) => println!(
            "metric    {m} (ASSUMED: the snapshot stores none and no --distance was given)"
        ),
        _ => {}
    }
    println!(
        "wal       {} entries read, {} written as W3 (the rest are already in the snapshot)",
        r.wal_entries_read, r.wal_entries_written
    );
    let dir = r.data_dir.display();
    if r.already_current {
        println!("nothing to do: {dir} is already in the current format");
    } else if r.dry_run {
        println!(
            "would migrate {dir} ({} vectors; checked: the migrated state replays identically)",
            r.vector_count
        );
    } else {
        println!(
            "migrated {dir} ({} vectors, replaying identically)",
            r.vector_count
        );
        if let Some(p) = &r.previous {
            println!("legacy files kept at {}", p.display());
        }
        println!("validate with `kyrodb_backup golden check` before resuming traffic");
    }
}

pub fn golden_create(r: &GoldenCreateReport) {
    println!(
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
        println!("MISMATCH: the golden file has dimension {file}, the data dir {dir}");
        return;
    }
    if g.ok {
        println!(
            "ok: {} queries, top-{} under {} over {} vectors: ids, order and scores match",
            g.queries, r.k, r.metric, r.count
        );
        return;
    }
    if let Some((want, found)) = g.metric_differs {
        println!("MISMATCH: the golden file was made with {want}, the data dir uses {found}");
    }
    if let Some((want, found)) = g.count_differs {
        println!("note: the golden file saw {want} vectors, the data dir has {found}");
    }
    if let Some(m) = &g.first_mismatch {
        let show = |x: Option<(u64, f32)>| {
            x.map_or_else(
                || "nothing".to_string(),
                |(id, s)| format!("id {id} score {s:.6}"),
            )
        };
        println!(
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
    match (&r.newest_id, r.age_seconds) {
        (Some(id), Some(age)) => println!(
            "{}: newest backup {id} is {} old (limit {})",
            if r.ok { "OK" } else { "ALERT" },
            human_age(age),
            human_age(r.max_age_seconds)
        ),
        _ => println!("ALERT: no backup in {}", dir.display()),
    }
}
