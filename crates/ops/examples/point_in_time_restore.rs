//! A point-in-time restore from another crate: back up a data directory, ask which seconds
//! its backups can rebuild, and restore the state as of one of them.
//!
//! ```sh
//! cargo run -p kyrodb-backup-ops --example point_in_time_restore [DATA_DIR]
//! ```
//!
//! Without an argument it uses a data dir the KyroDB engine wrote, shipped in `fixtures/`.
//! Everything it writes goes to a temporary directory.

use std::path::PathBuf;
use std::time::SystemTime;

use kyrodb_backup_ops::{
    create, restore, show, CreateOptions, NoProgress, Now, RestoreOptions, RestoreSource, Shown,
    Windows,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/kyrodb/v4-rotated/data"),
        PathBuf::from,
    );
    let work = tempfile::tempdir()?;
    let backups = work.path().join("backups");
    let now = Now::from_system_time(SystemTime::now());

    let full = create(&backups, &CreateOptions::new(&data), now, &NoProgress)?;
    println!(
        "backed up {} ({} vectors) as {}",
        data.display(),
        full.backup.vector_count,
        full.backup.id
    );

    let Shown::Repository(shown) = show(&backups, &full.backup.id)? else {
        unreachable!("a backup just made is one of this tool's");
    };
    let Windows::Known(windows) = shown.recoverable_windows else {
        return Err("the chain's windows cannot be computed".into());
    };
    let Some(first) = windows.first() else {
        return Err("no second of this backup is recoverable".into());
    };
    // A second inside the first window (the open end of the last window is u64::MAX).
    let at = first.from + (first.to.min(full.backup.timestamp) - first.from) / 2;
    println!(
        "recoverable from {} to {}; restoring {at}",
        first.from, first.to
    );

    let target = work.path().join("restored");
    let source = RestoreSource::PointInTime { at, nearest: false };
    let restored = restore(
        &backups,
        &RestoreOptions::new(&target, source),
        now,
        &NoProgress,
    )?;
    println!(
        "restored the state as of {} into {}: {} files, {} vectors",
        restored.recovered_to,
        restored.data_dir.display(),
        restored.files.len(),
        restored.vector_count
    );
    Ok(())
}
