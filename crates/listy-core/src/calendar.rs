//! Calendar arithmetic on day numbers (days since 1970-01-01) for the period
//! counters: the bucket a day falls in (day, ISO week from Monday, month,
//! year) and where the next bucket starts. Time zones are the caller's
//! business: it hands in local dates.

use crate::error::{Error, Result};

/// A counter period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// One local day.
    Day,
    /// An ISO week, Monday to Sunday.
    Week,
    /// A calendar month.
    Month,
    /// A calendar year.
    Year,
}

impl Period {
    /// Every period, shortest first (a row is counted in one bucket of each).
    pub const ALL: [Period; 4] = [Period::Day, Period::Week, Period::Month, Period::Year];

    /// The period called `day`, `week`, `month` or `year`.
    pub fn parse(name: &str) -> Result<Period> {
        Ok(match name {
            "day" => Period::Day,
            "week" => Period::Week,
            "month" => Period::Month,
            "year" => Period::Year,
            other => return Err(Error::Config(format!("unknown period {other:?}: use day, week, month or year"))),
        })
    }

    /// The letter that names the period in counter keys.
    pub fn letter(self) -> char {
        match self {
            Period::Day => 'd',
            Period::Week => 'w',
            Period::Month => 'm',
            Period::Year => 'y',
        }
    }

    /// The first day of the bucket containing `day`.
    pub fn start(self, day: i32) -> i32 {
        match self {
            Period::Day => day,
            // 1970-01-01 was a Thursday: Monday is 3 days before.
            Period::Week => day - (day + 3).rem_euclid(7),
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                days_from_civil(y, m, 1)
            }
            Period::Year => days_from_civil(civil_from_days(day).0, 1, 1),
        }
    }

    /// The first day after the bucket containing `day`.
    pub fn end(self, day: i32) -> i32 {
        let start = self.start(day);
        match self {
            Period::Day => start + 1,
            Period::Week => start + 7,
            Period::Month => {
                let (y, m, _) = civil_from_days(start);
                if m == 12 {
                    days_from_civil(y + 1, 1, 1)
                } else {
                    days_from_civil(y, m + 1, 1)
                }
            }
            Period::Year => days_from_civil(civil_from_days(start).0 + 1, 1, 1),
        }
    }
}

/// Howard Hinnant's `days_from_civil`.
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy as i32;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`: (year, month, day).
pub fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_on_the_day_monday_first_and_january_first() {
        let d = days_from_civil(2026, 11, 26); // a Thursday
        assert_eq!(civil_from_days(Period::Week.start(d)), (2026, 11, 23));
        assert_eq!(Period::Week.end(d), days_from_civil(2026, 11, 30));
        assert_eq!(civil_from_days(Period::Month.start(d)), (2026, 11, 1));
        assert_eq!(civil_from_days(Period::Month.end(d)), (2026, 12, 1));
        assert_eq!(civil_from_days(Period::Year.start(d)), (2026, 1, 1));
        assert_eq!(civil_from_days(Period::Year.end(d)), (2027, 1, 1));
        let dec = days_from_civil(2026, 12, 31);
        assert_eq!(civil_from_days(Period::Month.end(dec)), (2027, 1, 1));
        // ISO week of 2027-01-01 (a Friday) starts in 2026.
        assert_eq!(civil_from_days(Period::Week.start(days_from_civil(2027, 1, 1))), (2026, 12, 28));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    proptest::proptest! {
        #[test]
        fn civil_round_trips(d in -1_000_000i32..1_000_000) {
            let (y, m, dd) = civil_from_days(d);
            proptest::prop_assert_eq!(days_from_civil(y, m, dd), d);
            for p in Period::ALL {
                proptest::prop_assert!(p.start(d) <= d && d < p.end(d));
            }
        }
    }
}
