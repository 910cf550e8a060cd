//! The retention rule at its edges (midnight, ISO week 53, month ends, leap Februaries) and
//! its properties over many generated histories.

use kyrodb_backup_retention::{plan, BackupInfo, RetentionPolicy};
use time::macros::datetime;
use time::OffsetDateTime;

fn ts(t: OffsetDateTime) -> u64 {
    t.unix_timestamp() as u64
}

fn full(id: &str, t: u64) -> BackupInfo {
    BackupInfo {
        id: id.into(),
        chain_id: id.into(),
        timestamp: t,
        full: true,
    }
}

fn inc(id: &str, chain: &str, t: u64) -> BackupInfo {
    BackupInfo {
        id: id.into(),
        chain_id: chain.into(),
        timestamp: t,
        full: false,
    }
}

const OFF: RetentionPolicy = RetentionPolicy {
    keep_hourly: 0,
    keep_daily: 0,
    keep_weekly: 0,
    keep_monthly: 0,
    min_age_days: 0,
};

fn reasons(p: &kyrodb_backup_retention::PrunePlan, id: &str) -> Vec<String> {
    p.kept
        .iter()
        .find(|k| k.id == id)
        .map(|k| k.reasons.clone())
        .unwrap_or_default()
}

#[test]
fn midnight_utc_separates_days() {
    let now = ts(datetime!(2025-10-21 12:00 UTC));
    let b = [
        full("a", ts(datetime!(2025-10-20 23:59:59 UTC))),
        full("b", ts(datetime!(2025-10-21 00:00:00 UTC))),
        full("c", ts(datetime!(2025-10-20 10:00 UTC))),
    ];
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_daily: 2,
            ..OFF
        },
        now,
    );
    assert_eq!(reasons(&p, "b"), ["newest", "daily 2025-10-21"]);
    assert_eq!(reasons(&p, "a"), ["daily 2025-10-20"]);
    assert_eq!(p.pruned, ["c"]);
    // keep_daily 1 is today only.
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_daily: 1,
            ..OFF
        },
        now,
    );
    assert_eq!(p.pruned, ["a", "c"]);
}

#[test]
fn iso_week_53_and_the_turn_of_the_year() {
    let now = ts(datetime!(2021-01-04 08:00 UTC)); // Monday of 2021-W01
    let b = [
        full("thu", ts(datetime!(2020-12-31 12:00 UTC))),
        full("sun", ts(datetime!(2021-01-03 23:00 UTC))),
        full("mon", ts(datetime!(2021-01-04 07:00 UTC))),
        full("prev", ts(datetime!(2020-12-27 12:00 UTC))), // Sunday of 2020-W52
    ];
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_weekly: 2,
            ..OFF
        },
        now,
    );
    assert_eq!(reasons(&p, "mon"), ["newest", "weekly 2021-W01"]);
    assert_eq!(
        reasons(&p, "sun"),
        ["weekly 2020-W53"],
        "2021-01-03 is still 2020-W53"
    );
    assert_eq!(p.pruned, ["thu", "prev"]);
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_weekly: 3,
            ..OFF
        },
        now,
    );
    assert_eq!(reasons(&p, "prev"), ["weekly 2020-W52"]);
}

#[test]
fn month_ends_and_leap_februaries() {
    let now = ts(datetime!(2024-03-01 00:00 UTC)); // exactly at a period start
    let b = [
        full("mar", ts(datetime!(2024-03-01 00:00 UTC))),
        full("leap", ts(datetime!(2024-02-29 23:59:59 UTC))),
        full("feb1", ts(datetime!(2024-02-01 00:00 UTC))),
        full("jan31", ts(datetime!(2024-01-31 23:59:59 UTC))),
        full("dec", ts(datetime!(2023-12-15 12:00 UTC))),
    ];
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_monthly: 3,
            ..OFF
        },
        now,
    );
    assert_eq!(reasons(&p, "mar"), ["newest", "monthly 2024-03"]);
    assert_eq!(reasons(&p, "leap"), ["monthly 2024-02"]);
    assert_eq!(reasons(&p, "jan31"), ["monthly 2024-01"]);
    assert_eq!(p.pruned, ["feb1", "dec"]);
    // 2023 has a 28-day February.
    let now = ts(datetime!(2023-03-01 00:00:00 UTC));
    let b = [
        full("f28", ts(datetime!(2023-02-28 23:59:59 UTC))),
        full("m1", ts(datetime!(2023-03-01 00:00:00 UTC))),
    ];
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_daily: 2,
            ..OFF
        },
        now,
    );
    assert_eq!(reasons(&p, "f28"), ["daily 2023-02-28"]);
}

#[test]
fn empty_periods_still_count_and_hours_are_clock_hours() {
    let now = ts(datetime!(2025-10-20 14:30 UTC));
    let b = [
        full("h14", ts(datetime!(2025-10-20 14:00 UTC))),
        full("h12", ts(datetime!(2025-10-20 12:59:59 UTC))),
        full("h11", ts(datetime!(2025-10-20 11:10 UTC))),
    ];
    // Hours 14, 13 (empty), 12: h11 is outside.
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_hourly: 3,
            ..OFF
        },
        now,
    );
    assert_eq!(reasons(&p, "h12"), ["hourly 2025-10-20T12"]);
    assert_eq!(p.pruned, ["h11"]);
}

#[test]
fn newest_future_and_min_age() {
    let now = ts(datetime!(2025-10-20 12:00 UTC));
    let b = [
        full("future", now + 3600),
        full("young", now - 86_400 * 2),
        full("old", now - 86_400 * 10),
    ];
    let p = plan(
        &b,
        &RetentionPolicy {
            min_age_days: 3,
            ..OFF
        },
        now,
    );
    assert_eq!(reasons(&p, "future"), ["newest", "future"]);
    assert_eq!(reasons(&p, "young"), ["min-age"]);
    assert_eq!(p.pruned, ["old"]);
    // With every rule off, only the newest survives.
    let p = plan(&b[1..], &OFF, now);
    assert_eq!(p.kept.len(), 1);
    assert_eq!(p.kept[0].reasons, ["newest"]);
}

#[test]
fn a_kept_incremental_keeps_its_full_even_outside_every_window() {
    let now = ts(datetime!(2025-10-20 12:00 UTC));
    let day = 86_400;
    let b = [
        full("F", now - 400 * day),
        inc("i1", "F", now - 3 * day),
        inc("i2", "F", now - 2 * day),
        inc("i3", "F", now - day),
        full("G", now - 500 * day),
        inc("g1", "G", now - 450 * day),
    ];
    // Today (no backup), 10-19 and 10-18.
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_daily: 3,
            ..OFF
        },
        now,
    );
    assert_eq!(reasons(&p, "i3"), ["newest", "daily 2025-10-19"]);
    assert_eq!(reasons(&p, "i2"), ["daily 2025-10-18"]);
    assert_eq!(reasons(&p, "F"), ["chain of i3", "chain of i2"]);
    assert_eq!(
        p.pruned,
        ["i1", "g1", "G"],
        "the incremental between may go"
    );
    assert_eq!(p.chains_removed, ["G"]);
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

fn history(rng: &mut Rng, now: u64) -> Vec<BackupInfo> {
    let n = 1 + rng.below(120);
    let mut out: Vec<BackupInfo> = Vec::new();
    let mut chain = String::new();
    for i in 0..n {
        let t = now - rng.below(200 * 86_400) + rng.below(3) * 3600;
        let id = format!("{i:04}");
        if chain.is_empty() || rng.below(4) == 0 {
            chain.clone_from(&id);
            out.push(full(&id, t));
        } else {
            out.push(inc(&id, &chain, t));
        }
    }
    out
}

#[test]
fn properties_over_generated_histories() {
    let mut rng = Rng(7);
    let now = ts(datetime!(2025-10-20 12:34:56 UTC));
    for round in 0..400 {
        let backups = history(&mut rng, now);
        let policy = RetentionPolicy {
            keep_hourly: rng.below(30) as u32,
            keep_daily: rng.below(10) as u32,
            keep_weekly: rng.below(6) as u32,
            keep_monthly: rng.below(8) as u32,
            min_age_days: rng.below(4) as u32,
        };
        let p = plan(&backups, &policy, now);
        let kept: std::collections::BTreeSet<&str> = p.kept.iter().map(|k| k.id.as_str()).collect();
        let pruned: std::collections::BTreeSet<&str> =
            p.pruned.iter().map(String::as_str).collect();
        assert!(kept.is_disjoint(&pruned), "round {round}");
        assert_eq!(kept.len() + pruned.len(), backups.len(), "round {round}");
        let newest = backups
            .iter()
            .max_by(|a, b| a.timestamp.cmp(&b.timestamp).then_with(|| a.id.cmp(&b.id)))
            .unwrap();
        assert!(
            kept.contains(newest.id.as_str()),
            "round {round}: newest kept"
        );
        // The newest backup of each day among the last keep_daily days is kept.
        let today = now / 86_400;
        for d in 0..u64::from(policy.keep_daily) {
            let in_day = backups
                .iter()
                .filter(|b| b.timestamp <= now && b.timestamp / 86_400 == today - d)
                .max_by(|a, b| a.timestamp.cmp(&b.timestamp).then_with(|| a.id.cmp(&b.id)));
            if let Some(b) = in_day {
                assert!(kept.contains(b.id.as_str()), "round {round}: day -{d}");
            }
        }
        // No kept incremental without its full.
        for b in backups
            .iter()
            .filter(|b| !b.full && kept.contains(b.id.as_str()))
        {
            assert!(
                kept.contains(b.chain_id.as_str()),
                "round {round}: chain of {}",
                b.id
            );
        }
        // Idempotent: pruning the kept set again keeps it all.
        let survivors: Vec<BackupInfo> = backups
            .iter()
            .filter(|b| kept.contains(b.id.as_str()))
            .cloned()
            .collect();
        let again = plan(&survivors, &policy, now);
        assert!(again.pruned.is_empty(), "round {round}: {:?}", again.pruned);
    }
}
