//! Properties of `plan` over a few hundred generated histories, checked against a model of the
//! rule written independently (period keys from `time`'s own formatting, windows found by
//! stepping back from `now` one period at a time).

use std::collections::{BTreeMap, BTreeSet};

use kyrodb_backup_retention::{plan, BackupInfo, PrunePlan, RetentionPolicy};
use time::macros::{datetime, format_description};
use time::{Duration, OffsetDateTime};

const DAY: u64 = 86_400;

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

    fn count(&mut self, n: u64) -> u32 {
        u32::try_from(self.below(n)).unwrap()
    }
}

fn ts(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap()
}

fn at(t: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(i64::try_from(t).unwrap()).unwrap()
}

#[derive(Clone, Copy)]
enum Rule {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

const RULES: [Rule; 4] = [Rule::Hourly, Rule::Daily, Rule::Weekly, Rule::Monthly];

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
        }
    }

    fn count(self, p: &RetentionPolicy) -> u32 {
        match self {
            Rule::Hourly => p.keep_hourly,
            Rule::Daily => p.keep_daily,
            Rule::Weekly => p.keep_weekly,
            Rule::Monthly => p.keep_monthly,
        }
    }

    /// The period holding `t`, as `time` formats it.
    fn key(self, t: OffsetDateTime) -> String {
        let f = match self {
            Rule::Hourly => t.format(format_description!("[year]-[month]-[day]T[hour]")),
            Rule::Daily => t.format(format_description!("[year]-[month]-[day]")),
            Rule::Weekly => t.format(format_description!(
                "[year base:iso_week]-W[week_number repr:iso]"
            )),
            Rule::Monthly => t.format(format_description!("[year]-[month]")),
        };
        f.unwrap()
    }

    /// The keys of the `n` most recent periods, counting the one holding `now`, newest first.
    fn window(self, now: OffsetDateTime, n: u32) -> Vec<String> {
        let mut out = Vec::new();
        let mut t = now;
        for _ in 0..n {
            out.push(self.key(t));
            t = match self {
                Rule::Hourly => t - Duration::hours(1),
                Rule::Daily => t - Duration::days(1),
                Rule::Weekly => t - Duration::weeks(1),
                Rule::Monthly => {
                    // Any instant of the previous month: step back to the 1st, then one day.
                    t.replace_day(1).unwrap() - Duration::days(1)
                }
            };
        }
        out
    }
}

/// The newest (largest timestamp, then larger id) first.
fn sorted(backups: &[BackupInfo]) -> Vec<&BackupInfo> {
    let mut v: Vec<&BackupInfo> = backups.iter().collect();
    v.sort_by(|a, b| (b.timestamp, &b.id).cmp(&(a.timestamp, &a.id)));
    v
}

/// The rule as the brief states it, for histories with distinct ids.
fn model(backups: &[BackupInfo], policy: &RetentionPolicy, now: u64) -> PrunePlan {
    let order = sorted(backups);
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    if let Some(b) = order.first() {
        reasons.entry(&b.id).or_default().push("newest".into());
    }
    for b in &order {
        if b.timestamp > now {
            reasons.entry(&b.id).or_default().push("future".into());
        }
    }
    for b in &order {
        if b.timestamp <= now && now - b.timestamp < u64::from(policy.min_age_days) * DAY {
            reasons.entry(&b.id).or_default().push("min-age".into());
        }
    }
    for rule in RULES {
        for key in rule.window(at(now), rule.count(policy)) {
            if let Some(b) = order
                .iter()
                .find(|b| b.timestamp <= now && rule.key(at(b.timestamp)) == key)
            {
                reasons
                    .entry(&b.id)
                    .or_default()
                    .push(format!("{} {key}", rule.name()));
            }
        }
    }
    let chained: Vec<(&str, String)> = order
        .iter()
        .filter(|b| !b.full && reasons.contains_key(b.id.as_str()))
        .filter(|b| backups.iter().any(|f| f.id == b.chain_id))
        .map(|b| (b.chain_id.as_str(), format!("chain of {}", b.id)))
        .collect();
    for (full, r) in chained {
        reasons.entry(full).or_default().push(r);
    }
    let mut out = PrunePlan::default();
    for b in &order {
        match reasons.get(b.id.as_str()) {
            Some(r) => out.kept.push(kyrodb_backup_retention::Kept {
                id: b.id.clone(),
                reasons: r.clone(),
            }),
            None => out.pruned.push(b.id.clone()),
        }
    }
    for b in &order {
        let chain_kept = backups
            .iter()
            .any(|c| c.chain_id == b.chain_id && reasons.contains_key(c.id.as_str()));
        if !chain_kept && !out.chains_removed.contains(&b.chain_id) {
            out.chains_removed.push(b.chain_id.clone());
        }
    }
    out
}

/// Instants where periods turn, and ordinary ones.
const NOWS: [OffsetDateTime; 8] = [
    datetime!(2025-10-20 12:34:56 UTC),
    datetime!(2021-01-03 23:59:59 UTC),
    datetime!(2021-01-04 00:00:00 UTC),
    datetime!(2024-03-01 00:00:00 UTC),
    datetime!(2024-02-29 12:00:00 UTC),
    datetime!(2023-03-01 00:00:00 UTC),
    datetime!(2025-01-01 00:00:00 UTC),
    datetime!(2026-12-31 23:59:59 UTC),
];

fn history(rng: &mut Rng, now: u64) -> Vec<BackupInfo> {
    let n = 1 + rng.below(100);
    let span = [2, 10, 60, 250][rng.below(4) as usize] * DAY;
    let mut out: Vec<BackupInfo> = Vec::new();
    let mut chain = String::new();
    for i in 0..n {
        let mut t = match rng.below(10) {
            // A tie with an earlier backup.
            0 if !out.is_empty() => out[rng.below(out.len() as u64) as usize].timestamp,
            // Just before or at the start of an hour (so also of days, weeks, months).
            1 => (now - rng.below(span)) / 3600 * 3600 - rng.below(2),
            // In the future.
            2 => now + 1 + [0, rng.below(600), rng.below(3 * DAY)][rng.below(3) as usize],
            _ => now - rng.below(span),
        };
        if rng.below(20) == 0 {
            t = now;
        }
        let id = format!("{:04}", rng.below(10_000) * 1000 + i);
        let full = chain.is_empty() || rng.below(4) == 0;
        if full {
            chain.clone_from(&id);
        }
        out.push(BackupInfo {
            id: id.clone(),
            // Some incrementals belong to a chain whose full is not in the input.
            chain_id: if full {
                id
            } else if rng.below(10) == 0 {
                "gone".into()
            } else {
                chain.clone()
            },
            timestamp: t,
            subsec_nanos: 0,
            full,
        });
    }
    out
}

fn policy(rng: &mut Rng) -> RetentionPolicy {
    if rng.below(8) == 0 {
        return RetentionPolicy::default();
    }
    RetentionPolicy {
        keep_hourly: rng.count(40),
        keep_daily: rng.count(12),
        keep_weekly: rng.count(7),
        keep_monthly: rng.count(9),
        min_age_days: rng.count(4),
        keep_within_secs: 0,
    }
}

fn ids(p: &PrunePlan) -> (Vec<&str>, Vec<&str>) {
    (
        p.kept.iter().map(|k| k.id.as_str()).collect(),
        p.pruned.iter().map(String::as_str).collect(),
    )
}

#[test]
fn properties_over_generated_histories() {
    let mut rng = Rng(0x6b79_726f);
    for round in 0..600 {
        let now = if round % 3 == 0 {
            ts(datetime!(2020-01-01 00:00 UTC)) + rng.below(8 * 365 * DAY)
        } else {
            ts(NOWS[round % NOWS.len()])
        };
        let backups = history(&mut rng, now);
        let policy = policy(&mut rng);
        let ctx = format!("round {round}, now {now}, {policy}");
        let p = plan(&backups, &policy, now);

        // Kept and pruned partition the ids, each list newest first.
        let (kept, pruned) = ids(&p);
        let kept_set: BTreeSet<&str> = kept.iter().copied().collect();
        let pruned_set: BTreeSet<&str> = pruned.iter().copied().collect();
        let all: BTreeSet<&str> = backups.iter().map(|b| b.id.as_str()).collect();
        assert!(kept_set.is_disjoint(&pruned_set), "{ctx}");
        assert_eq!(kept.len() + pruned.len(), backups.len(), "{ctx}");
        assert_eq!(
            kept_set
                .union(&pruned_set)
                .copied()
                .collect::<BTreeSet<_>>(),
            all,
            "{ctx}"
        );
        let order: Vec<&str> = sorted(&backups).iter().map(|b| b.id.as_str()).collect();
        let by_order = |v: &[&str]| -> Vec<String> {
            order
                .iter()
                .filter(|id| v.contains(id))
                .map(|s| (*s).to_string())
                .collect()
        };
        assert_eq!(by_order(&kept), kept, "{ctx}: kept newest first");
        assert_eq!(by_order(&pruned), pruned, "{ctx}: pruned newest first");

        // The newest is kept, and says so first.
        assert_eq!(p.kept[0].id, order[0], "{ctx}");
        assert_eq!(p.kept[0].reasons[0], "newest", "{ctx}");

        // For each rule and each of its periods that holds backups, that period's newest is kept.
        for rule in RULES {
            for key in rule.window(at(now), rule.count(&policy)) {
                let newest = sorted(&backups)
                    .into_iter()
                    .find(|b| b.timestamp <= now && rule.key(at(b.timestamp)) == key);
                if let Some(b) = newest {
                    let k = p.kept.iter().find(|k| k.id == b.id);
                    let reason = format!("{} {key}", rule.name());
                    assert!(
                        k.is_some_and(|k| k.reasons.contains(&reason)),
                        "{ctx}: {reason} keeps {}",
                        b.id
                    );
                }
            }
        }

        // No kept incremental loses its full.
        for b in backups
            .iter()
            .filter(|b| !b.full && kept_set.contains(b.id.as_str()))
        {
            if all.contains(b.chain_id.as_str()) {
                assert!(
                    kept_set.contains(b.chain_id.as_str()),
                    "{ctx}: full of {}",
                    b.id
                );
            }
        }

        // A removed chain has nothing kept; every chain with nothing kept is removed.
        let chains: BTreeSet<&str> = backups.iter().map(|b| b.chain_id.as_str()).collect();
        for c in chains {
            let any_kept = backups
                .iter()
                .any(|b| b.chain_id == c && kept_set.contains(b.id.as_str()));
            assert_eq!(
                p.chains_removed.iter().any(|r| r == c),
                !any_kept,
                "{ctx}: chain {c}"
            );
        }

        // Exactly what the independent model says, reasons and order included.
        assert_eq!(p, model(&backups, &policy, now), "{ctx}");

        // Idempotent: planning again over the kept backups prunes nothing.
        let survivors: Vec<BackupInfo> = backups
            .iter()
            .filter(|b| kept_set.contains(b.id.as_str()))
            .cloned()
            .collect();
        let again = plan(&survivors, &policy, now);
        assert!(again.pruned.is_empty(), "{ctx}: {:?}", again.pruned);
        assert!(again.chains_removed.is_empty(), "{ctx}");

        // Pure: the input order does not matter.
        let mut shuffled = backups.clone();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i as u64 + 1) as usize);
        }
        assert_eq!(plan(&shuffled, &policy, now), p, "{ctx}: shuffled");
    }
}

#[test]
fn policy_text_round_trips() {
    let mut rng = Rng(3);
    for _ in 0..200 {
        let p = RetentionPolicy {
            keep_hourly: rng.next() as u32,
            keep_daily: rng.count(100),
            keep_weekly: rng.count(100),
            keep_monthly: rng.next() as u32,
            min_age_days: rng.count(1000),
            keep_within_secs: 0,
        };
        assert_eq!(p.to_string().parse::<RetentionPolicy>(), Ok(p));
    }
}
