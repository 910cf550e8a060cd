//! UTC calendar periods of Unix seconds: clock hours, calendar days, ISO weeks, calendar months.

use time::OffsetDateTime;

/// The last second the calendar can name, 9999-12-31T23:59:59Z. Later timestamps are taken as
/// this second when periods are computed.
pub(crate) const MAX_TIMESTAMP: u64 = 253_402_300_799;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// A kind of period a retention rule counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    /// The rule's name as it appears in reasons.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
        }
    }

    /// The period holding `ts`, numbered so that each period is one more than the one before.
    pub(crate) fn index(self, ts: u64) -> i64 {
        let secs = clamp(ts);
        match self {
            Period::Hour => secs.div_euclid(HOUR),
            Period::Day => secs.div_euclid(DAY),
            // 1970-01-01 was a Thursday: three days more puts every week start on a Monday.
            Period::Week => (secs.div_euclid(DAY) + 3).div_euclid(7),
            Period::Month => {
                let d = datetime(ts);
                i64::from(d.year()) * 12 + i64::from(u8::from(d.month())) - 1
            }
        }
    }

    /// The period holding `ts`, written as in reasons: `2025-10-20T14`, `2025-10-20`,
    /// `2025-W43` (ISO week-numbering year), `2025-10`.
    pub(crate) fn label(self, ts: u64) -> String {
        let d = datetime(ts);
        let (y, m, day) = (d.year(), u8::from(d.month()), d.day());
        match self {
            Period::Hour => format!("{y:04}-{m:02}-{day:02}T{:02}", d.hour()),
            Period::Day => format!("{y:04}-{m:02}-{day:02}"),
            Period::Week => {
                let date = d.date();
                let (iso_year, _, _) = date.to_iso_week_date();
                format!("{iso_year:04}-W{:02}", date.iso_week())
            }
            Period::Month => format!("{y:04}-{m:02}"),
        }
    }
}

fn clamp(ts: u64) -> i64 {
    i64::try_from(ts.min(MAX_TIMESTAMP)).expect("MAX_TIMESTAMP fits in i64")
}

fn datetime(ts: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(clamp(ts)).expect("0..=MAX_TIMESTAMP is in the calendar")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use time::Weekday;

    fn ts(t: OffsetDateTime) -> u64 {
        u64::try_from(t.unix_timestamp()).unwrap()
    }

    #[test]
    fn labels() {
        let cases = [
            (
                datetime!(2025-10-20 14:30 UTC),
                "2025-10-20T14",
                "2025-10-20",
                "2025-W43",
                "2025-10",
            ),
            (
                datetime!(2020-12-31 12:00 UTC),
                "2020-12-31T12",
                "2020-12-31",
                "2020-W53",
                "2020-12",
            ),
            (
                datetime!(2021-01-03 23:59:59 UTC),
                "2021-01-03T23",
                "2021-01-03",
                "2020-W53",
                "2021-01",
            ),
            (
                datetime!(2021-01-04 00:00 UTC),
                "2021-01-04T00",
                "2021-01-04",
                "2021-W01",
                "2021-01",
            ),
            (
                datetime!(2024-12-30 00:00 UTC),
                "2024-12-30T00",
                "2024-12-30",
                "2025-W01",
                "2024-12",
            ),
            (
                datetime!(2024-02-29 23:59:59 UTC),
                "2024-02-29T23",
                "2024-02-29",
                "2024-W09",
                "2024-02",
            ),
            (
                datetime!(1970-01-01 00:00 UTC),
                "1970-01-01T00",
                "1970-01-01",
                "1970-W01",
                "1970-01",
            ),
        ];
        for (t, h, d, w, m) in cases {
            let t = ts(t);
            assert_eq!(Period::Hour.label(t), h);
            assert_eq!(Period::Day.label(t), d);
            assert_eq!(Period::Week.label(t), w);
            assert_eq!(Period::Month.label(t), m);
        }
    }

    /// Walking day by day from 1970 to 2101, each index moves by exactly one when, and only
    /// when, its label changes, and weeks turn on Mondays.
    #[test]
    fn indices_step_with_labels() {
        let end = ts(datetime!(2101-01-01 00:00 UTC));
        for p in [Period::Day, Period::Week, Period::Month] {
            let mut prev = (p.index(0), p.label(0));
            let mut t = 86_400;
            while t < end {
                let cur = (p.index(t), p.label(t));
                if cur.1 == prev.1 {
                    assert_eq!(cur.0, prev.0, "{p:?} at {t}");
                } else {
                    assert_eq!(cur.0, prev.0 + 1, "{p:?} at {t}");
                }
                if p == Period::Week {
                    let monday = datetime(t).weekday() == Weekday::Monday;
                    assert_eq!(cur.1 != prev.1, monday, "week turns on Mondays, at {t}");
                }
                prev = cur;
                t += 86_400;
            }
        }
        assert_eq!(Period::Hour.index(3599), 0);
        assert_eq!(Period::Hour.index(3600), 1);
        assert_eq!(Period::Hour.label(3600), "1970-01-01T01");
    }

    #[test]
    fn timestamps_past_the_calendar_are_clamped() {
        for p in [Period::Hour, Period::Day, Period::Week, Period::Month] {
            assert_eq!(p.index(u64::MAX), p.index(MAX_TIMESTAMP));
            assert_eq!(p.label(u64::MAX), p.label(MAX_TIMESTAMP));
        }
        assert_eq!(Period::Hour.label(u64::MAX), "9999-12-31T23");
    }
}
