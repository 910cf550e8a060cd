//! Retention decisions for `kyrodb_backup`: which backups a policy keeps, and why.
//!
//! What it is for: [`plan`] is a pure function of (backups, policy, now). It reads no clock,
//! environment or storage, so the same inputs always give the same answer and tests pin `now`.
//! [`RetentionPolicy`] also reads and writes a one-line text form
//! (`hourly=24,daily=7,weekly=4,monthly=6,min-age-days=0`).
//! What it is not for: deleting anything (the storage crate does that, crash-safely), reading
//! manifests, or knowing what a chain needs beyond "an incremental needs its full".
//!
//! The rule. Periods are UTC: clock hours, calendar days, ISO weeks (Monday to Sunday),
//! calendar months.
//! 1. `keep_daily N` looks at the `N` most recent days, counting the one containing `now`
//!    (`keep_daily 7` is today and the six days before); in each of those that holds backups,
//!    the newest (largest timestamp, ties by larger id) is kept. Likewise hours, weeks and
//!    months. A period without backups still counts. 0 turns a rule off. Backups dated after
//!    `now` are in no period.
//! 2. A backup kept by any rule is kept, with one reason per rule and period:
//!    `hourly 2025-10-20T14`, `daily 2025-10-20`, `weekly 2025-W43` (ISO week-numbering year),
//!    `monthly 2025-10`.
//! 3. A backup younger than `min_age_days` days is kept (`min-age`), one dated after `now` is
//!    kept (`future`), and the newest is always kept (`newest`). With `keep_within_secs W`,
//!    every backup taken in the last `W` seconds is kept (`within`), and so is the newest one
//!    taken at or before `now - W` (`window start`): the window's first seconds restore from it.
//! 4. A kept incremental keeps the full backup of its chain, if present (`chain of <id>`), but
//!    not the incrementals between them: each manifest is complete.
//! 5. Everything else is pruned.
//!
//! ```
//! use kyrodb_backup_retention::{plan, BackupInfo, RetentionPolicy};
//!
//! let day = 86_400;
//! let now = 1_760_970_600; // 2025-10-20T14:30:00Z
//! let backups: Vec<BackupInfo> = (0..10)
//!     .map(|i| BackupInfo {
//!         id: format!("b{i}"),
//!         chain_id: format!("b{i}"),
//!         timestamp: now - i * day,
//!         subsec_nanos: 0,
//!         full: true,
//!     })
//!     .collect();
//! let policy: RetentionPolicy = "daily=3".parse()?;
//! let p = plan(&backups, &policy, now);
//! assert_eq!(p.kept.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["b0", "b1", "b2"]);
//! assert_eq!(p.kept[0].reasons, ["newest", "daily 2025-10-20"]);
//! assert_eq!(p.kept[1].reasons, ["daily 2025-10-19"]);
//! assert_eq!(p.pruned.len(), 7);
//! assert_eq!(p.chains_removed[0], "b3");
//! # Ok::<(), kyrodb_backup_retention::Error>(())
//! ```

mod error;
mod period;
mod plan;
mod policy;

pub use error::Error;
pub use plan::{plan, BackupInfo, Kept, PrunePlan};
pub use policy::RetentionPolicy;
