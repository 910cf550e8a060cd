//! The keep/prune decision.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::period::Period;
use crate::RetentionPolicy;

const DAY: u64 = 86_400;

/// What retention needs to know of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupInfo {
    /// Backup id.
    pub id: String,
    /// Id of the full backup its chain starts with (a full's own id).
    pub chain_id: String,
    /// Unix second (UTC) it was taken.
    pub timestamp: u64,
    /// Nanoseconds within that second: orders backups taken in the same second (0 when
    /// unknown; ties are then broken by the larger id).
    pub subsec_nanos: u32,
    /// Whether it is a full backup (otherwise an incremental of `chain_id`).
    pub full: bool,
}

/// A kept backup and every reason it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Backup id.
    pub id: String,
    /// Why, in this order: `newest`, `future`, `min-age`, `hourly 2025-10-20T14`,
    /// `daily 2025-10-20`, `weekly 2025-W43`, `monthly 2025-10`, `chain of <incremental id>`.
    pub reasons: Vec<String>,
}

/// The decision for every backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Kept backups, newest first.
    pub kept: Vec<Kept>,
    /// Ids of the pruned backups, newest first.
    pub pruned: Vec<String>,
    /// Chain ids none of whose backups are kept, newest chain (by its newest backup) first.
    pub chains_removed: Vec<String>,
}

/// Newest first: larger timestamp first, then later within the second, ties by larger id.
fn newest_first(a: &BackupInfo, b: &BackupInfo) -> Ordering {
    (b.timestamp, b.subsec_nanos)
        .cmp(&(a.timestamp, a.subsec_nanos))
        .then_with(|| b.id.cmp(&a.id))
}

#[derive(Default)]
struct Reasons<'a>(BTreeMap<&'a str, Vec<String>>);

impl<'a> Reasons<'a> {
    fn add(&mut self, id: &'a str, reason: String) {
        let list = self.0.entry(id).or_default();
        if !list.contains(&reason) {
            list.push(reason);
        }
    }

    fn has(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }
}

/// Decides which of `backups` `policy` keeps at the Unix second `now`.
///
/// The rule is the crate documentation's. Some cases it leaves open are settled thus:
/// - Backups sharing an id are one backup to the plan: the id is kept if any of them would be,
///   with the reasons of all of them, and is listed once, where its newest entry sorts.
/// - Timestamps after 9999-12-31T23:59:59Z count, for periods only, as that second.
/// - An incremental whose `chain_id` is its own id does not keep itself as a chain.
pub fn plan(backups: &[BackupInfo], policy: &RetentionPolicy, now: u64) -> PrunePlan {
    let mut order: Vec<&BackupInfo> = backups.iter().collect();
    order.sort_by(|a, b| newest_first(a, b));
    let mut reasons = Reasons::default();

    if let Some(newest) = order.first() {
        reasons.add(&newest.id, "newest".into());
    }
    for b in order.iter().filter(|b| b.timestamp > now) {
        reasons.add(&b.id, "future".into());
    }
    let min_age = u64::from(policy.min_age_days) * DAY;
    for b in order
        .iter()
        .filter(|b| b.timestamp <= now && now - b.timestamp < min_age)
    {
        reasons.add(&b.id, "min-age".into());
    }

    if policy.keep_within_secs > 0 {
        let start = now.saturating_sub(policy.keep_within_secs);
        for b in order
            .iter()
            .filter(|b| b.timestamp <= now && b.timestamp > start)
        {
            reasons.add(&b.id, "within".into());
        }
        // The newest backup at or before the window's start restores its first seconds.
        if let Some(b) = order.iter().find(|b| b.timestamp <= start) {
            reasons.add(&b.id, "window start".into());
        }
    }
    for (period, count) in [
        (Period::Hour, policy.keep_hourly),
        (Period::Day, policy.keep_daily),
        (Period::Week, policy.keep_weekly),
        (Period::Month, policy.keep_monthly),
    ] {
        if count == 0 {
            continue;
        }
        let current = period.index(now);
        let oldest = current - i64::from(count) + 1;
        let mut done = BTreeSet::new();
        // Newest first, so the first backup met in a period is that period's newest.
        for b in order.iter().filter(|b| b.timestamp <= now) {
            let idx = period.index(b.timestamp);
            if idx < oldest {
                // Every later backup is at least as old.
                break;
            }
            if done.insert(idx) {
                let reason = format!("{} {}", period.name(), period.label(b.timestamp));
                reasons.add(&b.id, reason);
            }
        }
    }

    // A kept incremental keeps its chain's full backup (not the incrementals between them).
    let present: BTreeSet<&str> = order.iter().map(|b| b.id.as_str()).collect();
    let chained: Vec<&BackupInfo> = order
        .iter()
        .copied()
        .filter(|b| !b.full && b.chain_id != b.id && reasons.has(&b.id))
        .filter(|b| present.contains(b.chain_id.as_str()))
        .collect();
    for b in chained {
        reasons.add(&b.chain_id, format!("chain of {}", b.id));
    }

    let mut out = PrunePlan::default();
    let mut listed = BTreeSet::new();
    for b in &order {
        if !listed.insert(b.id.as_str()) {
            continue;
        }
        match reasons.0.get(b.id.as_str()) {
            Some(r) => out.kept.push(Kept {
                id: b.id.clone(),
                reasons: r.clone(),
            }),
            None => out.pruned.push(b.id.clone()),
        }
    }
    let kept_chains: BTreeSet<&str> = order
        .iter()
        .filter(|b| reasons.has(&b.id))
        .map(|b| b.chain_id.as_str())
        .collect();
    let mut chains_seen = BTreeSet::new();
    for b in &order {
        let chain = b.chain_id.as_str();
        if !kept_chains.contains(chain) && chains_seen.insert(chain) {
            out.chains_removed.push(chain.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_within_keeps_the_window_and_the_backup_it_starts_from() {
        let now = 1_000_000;
        let b = |id: &str, age: u64| BackupInfo {
            id: id.into(),
            chain_id: id.into(),
            timestamp: now - age,
            subsec_nanos: 0,
            full: true,
        };
        // Backups 10 s, 50 s, 100 s, 150 s and 300 s old; a 120 s window.
        let all = [
            b("a", 10),
            b("b", 50),
            b("c", 100),
            b("d", 150),
            b("e", 300),
        ];
        let policy = RetentionPolicy {
            keep_within_secs: 120,
            ..OFF
        };
        let p = plan(&all, &policy, now);
        let kept: Vec<(&str, &[String])> = p
            .kept
            .iter()
            .map(|k| (k.id.as_str(), k.reasons.as_slice()))
            .collect();
        assert_eq!(
            kept,
            vec![
                ("a", &["newest".to_string(), "within".to_string()][..]),
                ("b", &["within".to_string()][..]),
                ("c", &["within".to_string()][..]),
                ("d", &["window start".to_string()][..]),
            ]
        );
        assert_eq!(p.pruned, vec!["e".to_string()]);
        // A backup exactly at the window's start is the one it starts from.
        let p = plan(&[b("x", 120), b("y", 121)], &policy, now);
        assert_eq!(p.pruned, vec!["y".to_string()]);
        // Off, nothing of it applies.
        let p = plan(&all, &OFF, now);
        assert_eq!(p.kept.len(), 1);
    }

    const OFF: RetentionPolicy = RetentionPolicy {
        keep_hourly: 0,
        keep_daily: 0,
        keep_weekly: 0,
        keep_monthly: 0,
        min_age_days: 0,
        keep_within_secs: 0,
    };

    fn b(id: &str, chain: &str, t: u64, full: bool) -> BackupInfo {
        BackupInfo {
            id: id.into(),
            chain_id: chain.into(),
            timestamp: t,
            subsec_nanos: 0,
            full,
        }
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert_eq!(
            plan(&[], &RetentionPolicy::default(), 0),
            PrunePlan::default()
        );
    }

    #[test]
    fn duplicate_ids_are_listed_once_and_kept_if_any_is() {
        let now = 10 * DAY;
        let backups = [
            b("x", "x", now - 1, true),
            b("y", "y", now - 2, true),
            b("x", "x", now - 3 * DAY, true),
            b("z", "z", now - 3 * DAY - 1, true),
        ];
        let p = plan(
            &backups,
            &RetentionPolicy {
                keep_daily: 4,
                ..OFF
            },
            now,
        );
        let ids: Vec<&str> = p.kept.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["x"]);
        assert_eq!(
            p.kept[0].reasons,
            ["newest", "daily 1970-01-10", "daily 1970-01-08"]
        );
        assert_eq!(p.pruned, ["y", "z"]);
        assert_eq!(p.chains_removed, ["y", "z"]);
    }

    #[test]
    fn an_incremental_naming_itself_does_not_chain_to_itself() {
        let p = plan(&[b("i", "i", 5, false)], &OFF, 10);
        assert_eq!(p.kept[0].reasons, ["newest"]);
    }

    #[test]
    fn ties_go_to_the_larger_id() {
        let now = 100;
        let p = plan(
            &[b("a", "a", 50, true), b("b", "b", 50, true)],
            &RetentionPolicy {
                keep_hourly: 1,
                ..OFF
            },
            now,
        );
        assert_eq!(p.kept.len(), 1);
        assert_eq!(p.kept[0].id, "b");
        assert_eq!(p.kept[0].reasons, ["newest", "hourly 1970-01-01T00"]);
        assert_eq!(p.pruned, ["a"]);
    }

    #[test]
    fn huge_counts_and_timestamps_do_not_overflow() {
        let policy = RetentionPolicy {
            keep_hourly: u32::MAX,
            keep_daily: u32::MAX,
            keep_weekly: u32::MAX,
            keep_monthly: u32::MAX,
            min_age_days: u32::MAX,
            keep_within_secs: 0,
        };
        let backups = [b("a", "a", 0, true), b("z", "z", u64::MAX, true)];
        let p = plan(&backups, &policy, u64::MAX);
        assert_eq!(p.kept.len(), 2);
        assert_eq!(
            p.kept[0].reasons,
            [
                "newest",
                "min-age",
                "hourly 9999-12-31T23",
                "daily 9999-12-31",
                "weekly 9999-W52",
                "monthly 9999-12"
            ]
        );
        // u64::MAX seconds is not younger than u32::MAX days, but the windows reach 1970.
        assert_eq!(p.kept[1].reasons[0], "hourly 1970-01-01T00");
        let p = plan(&backups, &policy, 0);
        assert_eq!(p.kept[0].reasons, ["newest", "future"]);
        assert_eq!(
            p.kept[1].reasons,
            [
                "min-age",
                "hourly 1970-01-01T00",
                "daily 1970-01-01",
                "weekly 1970-W01",
                "monthly 1970-01"
            ]
        );
    }
}
