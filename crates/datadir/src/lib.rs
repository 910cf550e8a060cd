//! Everything `kyrodb_backup` does to a live KyroDB data directory.
//!
//! What it is for:
//! - [`capture`]: opening one consistent state of a directory the engine is writing (the
//!   MANIFEST read once, every file it names opened before the engine can delete it, WAL
//!   segments cut at their last whole frame);
//! - [`follow`]: following the WAL of a live directory frame by frame for a continuous
//!   archiver (segments held open until read to their end, torn tails waited for, snapshots,
//!   compaction gaps and a swapped-in directory reported);
//! - [`target`]: replacing a directory whole: refusing a non-empty target unless allowed, or
//!   one a process still uses; building the new contents in a staging directory beside it;
//!   swapping them in with one atomic rename; keeping or deleting the old contents;
//! - [`migrate`]: rewriting a legacy directory in the current layouts, checked to replay to the
//!   same state, through the same staging and swap;
//! - [`golden`]: exact top-k queries of a directory's state, recorded and checked again.
//!
//! What it is not for: the backup repository (`kyrodb-backup-storage` moves bytes between it
//! and a data dir through this crate), or decoding the engine's files (`kyrodb-backup-format`).
//! It never reads the clock or the environment: times come in through options.
//!
//! ```
//! use kyrodb_backup_datadir::target::{Previous, Target};
//!
//! let tmp = tempfile::tempdir()?;
//! let data = tmp.path().join("data");
//! std::fs::create_dir(&data)?;
//! std::fs::write(data.join("MANIFEST"), "old")?;
//! // A directory holding files is only replaced when that is allowed.
//! assert!(Target::check(&data, false).is_err());
//! let staging = Target::check(&data, true)?.stage("restore", "example")?;
//! std::fs::write(staging.dir().join("MANIFEST"), "new")?;
//! let swapped = staging.swap_in(&Previous::KeepAs("previous-1".into()))?;
//! assert_eq!(std::fs::read_to_string(data.join("MANIFEST"))?, "new");
//! assert_eq!(std::fs::read_to_string(swapped.previous.unwrap().join("MANIFEST"))?, "old");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod capture;
mod error;
pub mod follow;
pub mod golden;
pub mod migrate;
pub mod target;

pub use error::{Error, Result};
