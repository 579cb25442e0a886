//! Calendar arithmetic on UTC seconds with a fixed offset: days, weekdays, minutes of the day.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A moment in the clinic's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Days since 1970-01-01, local.
    pub day: i64,
    /// 0 = Monday … 6 = Sunday.
    pub weekday: usize,
    /// Minutes since local midnight.
    pub minute: u32,
}

impl Local {
    pub fn of(utc_secs: i64, offset_secs: i64) -> Self {
        let local = utc_secs + offset_secs;
        let day = local.div_euclid(86_400);
        // 1970-01-01 was a Thursday (3 when Monday is 0).
        let weekday = (day + 3).rem_euclid(7) as usize;
        Local {
            day,
            weekday,
            minute: (local.rem_euclid(86_400) / 60) as u32,
        }
    }
}

/// `HH:MM` of a minute of the day.
pub fn hhmm(minute: u32) -> String {
    format!("{:02}:{:02}", (minute / 60) % 24, minute % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_and_weekdays() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 11, 29), 20_786);
        // 2026-11-29 is a Sunday; 23:30 UTC is Monday 00:30 at UTC+1.
        let t = 20_786 * 86_400 + 23 * 3600 + 30 * 60;
        assert_eq!(
            Local::of(t, 0),
            Local {
                day: 20_786,
                weekday: 6,
                minute: 23 * 60 + 30
            }
        );
        assert_eq!(
            Local::of(t, 3600),
            Local {
                day: 20_787,
                weekday: 0,
                minute: 30
            }
        );
        assert_eq!(hhmm(7 * 60 + 5), "07:05");
    }
}
