//! The retention policy and its text form.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// How many periods of each kind to keep, and how young a backup is always kept.
///
/// A count of 0 turns that rule off. Every policy is valid, including all zeros (which keeps
/// only the newest backup and those dated after `now`).
///
/// Its text form, read by [`FromStr`] and written by [`Display`](fmt::Display), is
/// `hourly=24,daily=7,weekly=4,monthly=6,min-age-days=0`: `key=value` items separated by commas,
/// each key at most once, in any order; a key left out is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetentionPolicy {
    /// Most recent clock hours (UTC), counting the current one.
    pub keep_hourly: u32,
    /// Most recent calendar days (UTC), counting today.
    pub keep_daily: u32,
    /// Most recent ISO weeks (Monday to Sunday, UTC), counting the current one.
    pub keep_weekly: u32,
    /// Most recent calendar months (UTC), counting the current one.
    pub keep_monthly: u32,
    /// Backups younger than this many days (`now - timestamp < min_age_days * 86400`) are kept.
    pub min_age_days: u32,
    /// Every second of this many last seconds stays restorable: backups younger than it are
    /// kept, and so is the newest one taken at or before its start. 0 turns it off.
    pub keep_within_secs: u64,
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
            keep_within_secs: 0,
        }
    }
}

const KEYS: [&str; 6] = [
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "min-age-days",
    "within-secs",
];

impl RetentionPolicy {
    fn field(&mut self, key: &str) -> Option<&mut u32> {
        Some(match key {
            "hourly" => &mut self.keep_hourly,
            "daily" => &mut self.keep_daily,
            "weekly" => &mut self.keep_weekly,
            "monthly" => &mut self.keep_monthly,
            "min-age-days" => &mut self.min_age_days,
            _ => return None,
        })
    }
}

impl fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hourly={},daily={},weekly={},monthly={},min-age-days={}",
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.min_age_days
        )?;
        if self.keep_within_secs > 0 {
            write!(f, ",within-secs={}", self.keep_within_secs)?;
        }
        Ok(())
    }
}

impl FromStr for RetentionPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = Error::InvalidPolicy;
        if s.trim().is_empty() {
            return Err(invalid(
                "empty (write e.g. `daily=0` to keep only the newest)".into(),
            ));
        }
        let mut policy = RetentionPolicy {
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            min_age_days: 0,
            keep_within_secs: 0,
        };
        let mut seen = [false; KEYS.len()];
        for item in s.split(',').map(str::trim) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(invalid(format!("`{item}` is not key=value")));
            };
            let (key, value) = (key.trim(), value.trim());
            let Some(slot) = KEYS.iter().position(|k| *k == key) else {
                return Err(invalid(format!(
                    "unknown key `{key}` (expected one of {})",
                    KEYS.join(", ")
                )));
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(invalid(format!("`{key}` given twice")));
            }
            if key == "within-secs" {
                policy.keep_within_secs = value
                    .parse::<u64>()
                    .map_err(|e| invalid(format!("`{key}={value}`: {e}")))?;
                continue;
            }
            let n = value
                .parse::<u32>()
                .map_err(|e| invalid(format!("`{key}={value}`: {e}")))?;
            *policy.field(key).expect("key is known") = n;
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        let d = RetentionPolicy::default();
        assert_eq!(
            d.to_string(),
            "hourly=24,daily=7,weekly=4,monthly=6,min-age-days=0"
        );
        assert_eq!(d.to_string().parse::<RetentionPolicy>(), Ok(d));
        let p: RetentionPolicy = " daily = 30 , min-age-days=7,monthly=12".parse().unwrap();
        assert_eq!(
            p,
            RetentionPolicy {
                keep_hourly: 0,
                keep_daily: 30,
                keep_weekly: 0,
                keep_monthly: 12,
                min_age_days: 7,
                keep_within_secs: 0,
            }
        );
        let w: RetentionPolicy = "daily=1,within-secs=604800".parse().unwrap();
        assert_eq!(w.keep_within_secs, 604_800);
        assert_eq!(w.to_string().parse::<RetentionPolicy>(), Ok(w));
        assert!(w.to_string().ends_with(",within-secs=604800"));
    }

    #[test]
    fn bad_text_is_an_invalid_policy() {
        for s in [
            "",
            "  ",
            "daily",
            "daily=7,",
            "yearly=1",
            "daily=7,daily=8",
            "daily=-1",
            "daily=4294967296",
            "daily=seven",
        ] {
            let e = s.parse::<RetentionPolicy>().unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("invalid policy: "), "{s:?}: {msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
    }
}
