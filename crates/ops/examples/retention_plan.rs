//! A retention plan from another crate: which backups a policy keeps at a given moment, and
//! why, without deleting anything (a dry-run prune with the clock pinned).
//!
//! ```sh
//! cargo run -p kyrodb-backup-ops --example retention_plan
//! ```
//!
//! It takes twelve daily backups of a data dir the KyroDB engine wrote (shipped in
//! `fixtures/`) into a temporary repository, with the clock pinned to each day, and prints
//! what `daily=3,weekly=2` keeps on the last day.

use std::path::PathBuf;

use kyrodb_backup_ops::types::RetentionPolicy;
use kyrodb_backup_ops::{create, prune, CreateOptions, NoProgress, Now, PruneOptions, Reference};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/kyrodb/v4-basic/data");
    let work = tempfile::tempdir()?;
    let backups = work.path().join("backups");
    let day = 86_400;
    let first = 1_760_961_600; // 2025-10-20T12:00:00Z
    for i in 0..12 {
        let mut opts = CreateOptions::new(&data);
        // A full backup every week, incrementals between.
        if i % 7 != 0 {
            opts.reference = Some(Reference::Latest);
        }
        opts.description = format!("day {i}");
        create(&backups, &opts, Now::at(first + i * day), &NoProgress)?;
    }

    let policy: RetentionPolicy = "daily=3,weekly=2".parse()?;
    let mut opts = PruneOptions::new(policy);
    opts.dry_run = true;
    let plan = prune(&backups, &opts, Now::at(first + 11 * day + 3600))?;
    for k in &plan.kept {
        println!("keep   {}  {}  {}", k.id, k.timestamp, k.reasons.join(", "));
    }
    for (id, ts) in plan.pruned.iter().zip(&plan.pruned_timestamps) {
        println!("prune  {id}  {ts}");
    }
    println!(
        "{} of {} backups would be pruned, freeing {} bytes",
        plan.pruned.len(),
        plan.backups_before,
        plan.bytes_freed
    );
    Ok(())
}
