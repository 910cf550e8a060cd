//! The retention rule at its edges: midnight, ISO week 53, month and year ends, 28- and 29-day
//! Februaries, `now` exactly at a period start, empty periods, chains, and the fixed reasons.

use kyrodb_backup_retention::{plan, BackupInfo, PrunePlan, RetentionPolicy};
use time::macros::datetime;
use time::OffsetDateTime;

fn ts(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap()
}

const DAY: u64 = 86_400;

fn full(id: &str, t: u64) -> BackupInfo {
    BackupInfo {
        id: id.into(),
        chain_id: id.into(),
        timestamp: t,
        subsec_nanos: 0,
        full: true,
    }
}

fn inc(id: &str, chain: &str, t: u64) -> BackupInfo {
    BackupInfo {
        id: id.into(),
        chain_id: chain.into(),
        timestamp: t,
        subsec_nanos: 0,
        full: false,
    }
}

const OFF: RetentionPolicy = RetentionPolicy {
    keep_hourly: 0,
    keep_daily: 0,
    keep_weekly: 0,
    keep_monthly: 0,
    min_age_days: 0,
    keep_within_secs: 0,
};

fn ids(p: &PrunePlan) -> Vec<&str> {
    p.kept.iter().map(|k| k.id.as_str()).collect()
}

fn reasons(p: &PrunePlan, id: &str) -> Vec<String> {
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
            keep_within_secs: 0,
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

/// One backup, taken at `now`, every rule at 1: its reasons name each period holding it.
#[test]
fn period_labels_at_the_edges() {
    let one = RetentionPolicy {
        keep_hourly: 1,
        keep_daily: 1,
        keep_weekly: 1,
        keep_monthly: 1,
        min_age_days: 0,
        keep_within_secs: 0,
    };
    // The instant, then its hour, day, ISO week and month.
    let table = [
        (
            datetime!(2025-10-20 14:30 UTC),
            "2025-10-20T14 2025-10-20 2025-W43 2025-10",
        ),
        (
            datetime!(2020-12-31 12:00 UTC),
            "2020-12-31T12 2020-12-31 2020-W53 2020-12",
        ),
        (
            datetime!(2021-01-03 23:59:59 UTC),
            "2021-01-03T23 2021-01-03 2020-W53 2021-01",
        ),
        (
            datetime!(2021-01-04 00:00 UTC),
            "2021-01-04T00 2021-01-04 2021-W01 2021-01",
        ),
        // ISO 2025-W01 starts on Monday 2024-12-30.
        (
            datetime!(2024-12-31 23:59:59 UTC),
            "2024-12-31T23 2024-12-31 2025-W01 2024-12",
        ),
        (
            datetime!(2025-01-01 00:00 UTC),
            "2025-01-01T00 2025-01-01 2025-W01 2025-01",
        ),
        // 2026 has 53 ISO weeks; 2027-01-01 is a Friday.
        (
            datetime!(2027-01-01 09:00 UTC),
            "2027-01-01T09 2027-01-01 2026-W53 2027-01",
        ),
        (
            datetime!(2024-01-31 23:59:59 UTC),
            "2024-01-31T23 2024-01-31 2024-W05 2024-01",
        ),
        (
            datetime!(2024-02-01 00:00 UTC),
            "2024-02-01T00 2024-02-01 2024-W05 2024-02",
        ),
        (
            datetime!(2024-02-29 12:00 UTC),
            "2024-02-29T12 2024-02-29 2024-W09 2024-02",
        ),
        (
            datetime!(2023-02-28 23:59:59 UTC),
            "2023-02-28T23 2023-02-28 2023-W09 2023-02",
        ),
        (
            datetime!(2023-03-01 00:00 UTC),
            "2023-03-01T00 2023-03-01 2023-W09 2023-03",
        ),
    ];
    for (t, labels) in table {
        let now = ts(t);
        let p = plan(&[full("x", now)], &one, now);
        let expected: Vec<String> = std::iter::once("newest".to_string())
            .chain(
                ["hourly", "daily", "weekly", "monthly"]
                    .iter()
                    .zip(labels.split(' '))
                    .map(|(rule, label)| format!("{rule} {label}")),
            )
            .collect();
        assert_eq!(reasons(&p, "x"), expected, "{t}");
    }
}

/// `now` exactly at the start of an hour, a day, an ISO week and a month (Monday 2025-12-01):
/// the second before is in the previous period of every kind.
#[test]
fn now_exactly_at_a_period_start() {
    let now = ts(datetime!(2025-12-01 00:00 UTC));
    let b = [full("at", now), full("before", now - 1)];
    for policy in [
        RetentionPolicy {
            keep_hourly: 1,
            ..OFF
        },
        RetentionPolicy {
            keep_daily: 1,
            ..OFF
        },
        RetentionPolicy {
            keep_weekly: 1,
            ..OFF
        },
        RetentionPolicy {
            keep_monthly: 1,
            ..OFF
        },
    ] {
        let p = plan(&b, &policy, now);
        assert_eq!(p.pruned, ["before"], "{policy}");
        assert_eq!(reasons(&p, "at").len(), 2, "{policy}");
    }
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_hourly: 2,
            keep_daily: 2,
            keep_weekly: 2,
            keep_monthly: 2,
            min_age_days: 0,
            keep_within_secs: 0,
        },
        now,
    );
    assert_eq!(
        reasons(&p, "before"),
        [
            "hourly 2025-11-30T23",
            "daily 2025-11-30",
            "weekly 2025-W48",
            "monthly 2025-11"
        ]
    );
}

#[test]
fn keep_daily_7_is_today_and_the_six_days_before() {
    let now = ts(datetime!(2025-10-20 09:15 UTC));
    let start = ts(datetime!(2025-09-30 00:00 UTC));
    // Every 6 hours from 2025-09-30 to now, and none on 2025-10-16.
    let b: Vec<BackupInfo> = (start..=now)
        .step_by(6 * 3600)
        .filter(|t| (t - start) / DAY != 16)
        .map(|t| full(&format!("b{t}"), t))
        .collect();
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_daily: 7,
            ..OFF
        },
        now,
    );
    let kept: Vec<(String, Vec<String>)> = p
        .kept
        .iter()
        .map(|k| (k.id.clone(), k.reasons.clone()))
        .collect();
    let at = |t: OffsetDateTime| format!("b{}", ts(t));
    // 10-16 is empty and still counts: the look-back does not reach 10-13.
    assert_eq!(
        kept,
        [
            (
                at(datetime!(2025-10-20 06:00 UTC)),
                vec!["newest".to_string(), "daily 2025-10-20".into()]
            ),
            (
                at(datetime!(2025-10-19 18:00 UTC)),
                vec!["daily 2025-10-19".into()]
            ),
            (
                at(datetime!(2025-10-18 18:00 UTC)),
                vec!["daily 2025-10-18".into()]
            ),
            (
                at(datetime!(2025-10-17 18:00 UTC)),
                vec!["daily 2025-10-17".into()]
            ),
            (
                at(datetime!(2025-10-15 18:00 UTC)),
                vec!["daily 2025-10-15".into()]
            ),
            (
                at(datetime!(2025-10-14 18:00 UTC)),
                vec!["daily 2025-10-14".into()]
            ),
        ]
    );
    assert_eq!(p.kept.len() + p.pruned.len(), b.len());
}

#[test]
fn keep_monthly_counts_the_current_month_and_crosses_years() {
    let now = ts(datetime!(2025-02-10 12:00 UTC));
    let b = [
        full("feb", ts(datetime!(2025-02-01 00:00 UTC))),
        full("jan", ts(datetime!(2025-01-31 23:59:59 UTC))),
        full("jan-early", ts(datetime!(2025-01-01 00:00 UTC))),
        full("dec", ts(datetime!(2024-12-31 23:59:59 UTC))),
        full("nov", ts(datetime!(2024-11-30 12:00 UTC))),
        full("oct", ts(datetime!(2024-10-01 00:00 UTC))),
        full("sep", ts(datetime!(2024-09-30 23:59:59 UTC))),
        full("aug", ts(datetime!(2024-08-15 00:00 UTC))),
    ];
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_monthly: 6,
            ..OFF
        },
        now,
    );
    // Six months counting February 2025: back to September 2024, across the year end.
    assert_eq!(ids(&p), ["feb", "jan", "dec", "nov", "oct", "sep"]);
    assert_eq!(reasons(&p, "feb"), ["newest", "monthly 2025-02"]);
    assert_eq!(reasons(&p, "dec"), ["monthly 2024-12"]);
    assert_eq!(reasons(&p, "sep"), ["monthly 2024-09"]);
    assert_eq!(p.pruned, ["jan-early", "aug"]);
}

#[test]
fn min_age_is_strict_and_now_itself_is_not_future() {
    let now = ts(datetime!(2025-10-20 12:00 UTC));
    let b = [
        full("now", now),
        full("edge", now - 2 * DAY),
        full("inside", now - 2 * DAY + 1),
    ];
    let p = plan(
        &b,
        &RetentionPolicy {
            min_age_days: 2,
            keep_within_secs: 0,
            ..OFF
        },
        now,
    );
    assert_eq!(reasons(&p, "now"), ["newest", "min-age"]);
    assert_eq!(reasons(&p, "inside"), ["min-age"]);
    assert_eq!(
        p.pruned,
        ["edge"],
        "exactly 2 days old is not younger than 2 days"
    );
}

#[test]
fn future_backups_are_kept_but_take_no_period() {
    let now = ts(datetime!(2025-10-20 12:30 UTC));
    let b = [
        full("later", now + 1),
        full("much-later", now + 40 * DAY),
        full("this-hour", now - 60),
    ];
    let p = plan(
        &b,
        &RetentionPolicy {
            keep_hourly: 1,
            ..OFF
        },
        now,
    );
    assert_eq!(reasons(&p, "much-later"), ["newest", "future"]);
    assert_eq!(reasons(&p, "later"), ["future"]);
    assert_eq!(reasons(&p, "this-hour"), ["hourly 2025-10-20T12"]);
}

#[test]
fn the_newest_wins_ties_by_the_larger_id() {
    let now = ts(datetime!(2025-10-20 12:00 UTC));
    let b = [
        full("a", now - 10),
        full("c", now - 10),
        full("b", now - 10),
    ];
    let p = plan(&b, &OFF, now);
    assert_eq!(ids(&p), ["c"]);
    assert_eq!(p.pruned, ["b", "a"]);
}

/// Every kind of reason on one backup, in the fixed order.
#[test]
fn reasons_come_in_the_fixed_order() {
    let now = ts(datetime!(2025-12-01 00:30 UTC)); // a Monday, first of the month
    let b = [
        full("F", ts(datetime!(2025-11-30 23:00 UTC))),
        inc("i", "F", ts(datetime!(2025-12-01 00:10 UTC))),
        inc("j", "F", ts(datetime!(2025-12-02 00:00 UTC))),
    ];
    let policy = RetentionPolicy {
        keep_hourly: 2,
        keep_daily: 2,
        keep_weekly: 2,
        keep_monthly: 2,
        min_age_days: 1,
        keep_within_secs: 0,
    };
    let p = plan(&b, &policy, now);
    assert_eq!(ids(&p), ["j", "i", "F"]);
    assert_eq!(reasons(&p, "j"), ["newest", "future"]);
    assert_eq!(
        reasons(&p, "i"),
        [
            "min-age",
            "hourly 2025-12-01T00",
            "daily 2025-12-01",
            "weekly 2025-W49",
            "monthly 2025-12"
        ]
    );
    assert_eq!(
        reasons(&p, "F"),
        [
            "min-age",
            "hourly 2025-11-30T23",
            "daily 2025-11-30",
            "weekly 2025-W48",
            "monthly 2025-11",
            "chain of j",
            "chain of i"
        ]
    );
}

#[test]
fn a_missing_full_is_not_an_error_and_chains_removed_go_newest_first() {
    let now = ts(datetime!(2025-10-20 12:00 UTC));
    let b = [
        inc("orphan", "gone", now - 3600),
        full("A", now - 10 * DAY),
        inc("a1", "A", now - 9 * DAY),
        full("B", now - 20 * DAY),
        full("C", now - 5 * DAY),
    ];
    let p = plan(&b, &OFF, now);
    assert_eq!(ids(&p), ["orphan"]);
    assert_eq!(reasons(&p, "orphan"), ["newest"]);
    assert_eq!(p.pruned, ["C", "a1", "A", "B"]);
    assert_eq!(p.chains_removed, ["C", "A", "B"]);
}

#[test]
fn the_default_policy_is_the_contracts() {
    assert_eq!(
        RetentionPolicy::default(),
        RetentionPolicy {
            keep_hourly: 24,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            min_age_days: 0,
            keep_within_secs: 0,
        }
    );
}
