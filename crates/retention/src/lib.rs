//! Retention decisions for `kyrodb_backup`: which backups a policy keeps, and why.
//!
//! What it is for: [`plan`] is a pure function of (backups, policy, now). It reads no clock,
//! environment or storage, so the same inputs always give the same answer and tests pin `now`.
//! What it is not for: deleting anything (the storage crate does that, crash-safely).
//!
//! The rule. Periods are UTC: clock hours, calendar days, ISO weeks (Monday to Sunday),
//! calendar months. `keep_daily 7` looks at the 7 most recent days counting the one containing
//! `now`; in each of those that holds backups, the newest is kept. Likewise hours, weeks and
//! months; 0 turns a rule off. A backup younger than `min_age_days` is kept (`min-age`), one
//! dated after `now` is kept (`future`), the newest is always kept (`newest`), and a kept
//! incremental keeps the full backup of its chain (`chain of <id>`). Everything else is pruned.
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
//!         full: true,
//!     })
//!     .collect();
//! let policy = RetentionPolicy { keep_hourly: 0, keep_daily: 3, keep_weekly: 0, keep_monthly: 0, min_age_days: 0 };
//! let p = plan(&backups, &policy, now);
//! assert_eq!(p.kept.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["b0", "b1", "b2"]);
//! assert_eq!(p.kept[1].reasons, ["daily 2025-10-19"]);
//! assert_eq!(p.pruned.len(), 7);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

/// What retention needs to know of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// Backup id.
    pub id: String,
    /// Id of the full backup of its chain (its own id for a full).
    pub chain_id: String,
    /// Unix second it was taken.
    pub timestamp: u64,
    /// Whether it is a full backup.
    pub full: bool,
}

/// How many periods of each kind to keep, and how young a backup is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Most recent clock hours (UTC), counting the current one.
    pub keep_hourly: u32,
    /// Most recent calendar days (UTC), counting today.
    pub keep_daily: u32,
    /// Most recent ISO weeks, counting the current one.
    pub keep_weekly: u32,
    /// Most recent calendar months, counting the current one.
    pub keep_monthly: u32,
    /// Backups younger than this many days are kept.
    pub min_age_days: u32,
}

impl Default for RetentionPolicy {
    /// The contract's defaults: 24 hourly, 7 daily, 4 weekly, 6 monthly, no minimum age.
    fn default() -> Self {
        Self {
            keep_hourly: 24,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            min_age_days: 0,
        }
    }
}

/// A kept backup and every reason it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Backup id.
    pub id: String,
    /// Why, e.g. `newest`, `daily 2025-10-20`, `monthly 2025-10`, `chain of <id>`.
    pub reasons: Vec<String>,
}

/// The decision for every backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Kept backups, newest first.
    pub kept: Vec<Kept>,
    /// Pruned backup ids, newest first.
    pub pruned: Vec<String>,
    /// Chains none of whose backups are kept.
    pub chains_removed: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
        }
    }

    /// A number that increases by one from each period to the next.
    fn index(self, ts: u64) -> i64 {
        let ts = i64::try_from(ts).unwrap_or(i64::MAX);
        match self {
            Period::Hour => ts.div_euclid(3600),
            Period::Day => ts.div_euclid(86_400),
            // 1970-01-01 was a Thursday: shifting by 3 days puts week starts on Mondays.
            Period::Week => (ts.div_euclid(86_400) + 3).div_euclid(7),
            Period::Month => {
                let d = datetime(ts);
                i64::from(d.year()) * 12 + i64::from(u8::from(d.month())) - 1
            }
        }
    }

    fn label(self, ts: u64) -> String {
        let d = datetime(i64::try_from(ts).unwrap_or(i64::MAX));
        let (y, m, day, h) = (d.year(), u8::from(d.month()), d.day(), d.hour());
        match self {
            Period::Hour => format!("{y:04}-{m:02}-{day:02}T{h:02}"),
            Period::Day => format!("{y:04}-{m:02}-{day:02}"),
            Period::Week => {
                let (iy, iw, _) = d.date().to_iso_week_date();
                format!("{iy:04}-W{iw:02}")
            }
            Period::Month => format!("{y:04}-{m:02}"),
        }
    }
}

fn datetime(ts: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(ts).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn add<'a>(m: &mut BTreeMap<&'a str, Vec<String>>, id: &'a str, r: String) {
    m.entry(id).or_default().push(r);
}

/// Decides which backups `policy` keeps at `now`; see the crate documentation.
pub fn plan(backups: &[BackupInfo], policy: &RetentionPolicy, now: u64) -> PrunePlan {
    let mut order: Vec<&BackupInfo> = backups.iter().collect();
    order.sort_by(|a, b| b.timestamp.cmp(&a.timestamp).then_with(|| b.id.cmp(&a.id)));
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();

    if let Some(newest) = order.first() {
        add(&mut reasons, &newest.id, "newest".into());
    }
    let min_age = u64::from(policy.min_age_days) * 86_400;
    for b in &order {
        if b.timestamp > now {
            add(&mut reasons, &b.id, "future".into());
        } else if now - b.timestamp < min_age {
            add(&mut reasons, &b.id, "min-age".into());
        }
    }
    for (period, n) in [
        (Period::Hour, policy.keep_hourly),
        (Period::Day, policy.keep_daily),
        (Period::Week, policy.keep_weekly),
        (Period::Month, policy.keep_monthly),
    ] {
        if n == 0 {
            continue;
        }
        let current = period.index(now);
        let oldest = current - i64::from(n) + 1;
        let mut seen = BTreeSet::new();
        // Newest first: the first backup met in a period is its newest.
        for b in order.iter().filter(|b| b.timestamp <= now) {
            let idx = period.index(b.timestamp);
            if idx >= oldest && idx <= current && seen.insert(idx) {
                add(
                    &mut reasons,
                    &b.id,
                    format!("{} {}", period.name(), period.label(b.timestamp)),
                );
            }
        }
    }
    // A kept incremental keeps its chain's full backup.
    let ids: BTreeSet<&str> = order.iter().map(|b| b.id.as_str()).collect();
    let chained: Vec<(&str, String)> = order
        .iter()
        .filter(|b| !b.full && reasons.contains_key(b.id.as_str()))
        .filter(|b| ids.contains(b.chain_id.as_str()))
        .map(|b| (b.chain_id.as_str(), format!("chain of {}", b.id)))
        .collect();
    for (full, r) in chained {
        add(&mut reasons, full, r);
    }

    let mut out = PrunePlan::default();
    for b in &order {
        match reasons.remove(b.id.as_str()) {
            Some(r) => out.kept.push(Kept {
                id: b.id.clone(),
                reasons: r,
            }),
            None => out.pruned.push(b.id.clone()),
        }
    }
    let kept_chains: BTreeSet<&str> = order
        .iter()
        .filter(|b| out.kept.iter().any(|k| k.id == b.id))
        .map(|b| b.chain_id.as_str())
        .collect();
    let all_chains: BTreeSet<&str> = order.iter().map(|b| b.chain_id.as_str()).collect();
    out.chains_removed = all_chains
        .difference(&kept_chains)
        .map(|c| (*c).to_string())
        .collect();
    out
}
