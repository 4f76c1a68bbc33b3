//! Time: the local day as UTC instants, and how instants are shown.

use super::*;

/// The day's and the baseline's boundaries, and the local clock to show instants in.
pub(super) struct DayClock {
    pub(super) tz: Tz,
    pub(super) start: DateTime<Utc>,
    pub(super) end: DateTime<Utc>,
    pub(super) baseline_start: DateTime<Utc>,
    pub(super) first_baseline_day: NaiveDate,
    pub(super) last_baseline_day: NaiveDate,
    pub(super) now: DateTime<Utc>,
}

impl DayClock {
    pub(super) fn new(query: &FactsQuery, now: DateTime<Utc>) -> Result<Self, FactsError> {
        let out_of_range = || FactsError::DayOutOfRange {
            day: query.day,
            baseline_days: query.baseline_days,
        };
        let next = query.day.succ_opt().ok_or_else(out_of_range)?;
        let first_baseline_day = query
            .day
            .checked_sub_days(Days::new(u64::from(query.baseline_days)))
            .ok_or_else(out_of_range)?;
        let tz = query.time_zone;
        Ok(Self {
            tz,
            start: local_midnight(tz, query.day)?,
            end: local_midnight(tz, next)?,
            baseline_start: local_midnight(tz, first_baseline_day)?,
            first_baseline_day,
            last_baseline_day: query.day.pred_opt().unwrap_or(query.day),
            now,
        })
    }

    pub(super) fn day_hours(&self) -> u32 {
        hours_between(self.start, self.end)
    }

    /// Whole hours passed at `now`: partial hours would look like silence.
    pub(super) fn elapsed_hours(&self) -> u32 {
        if self.now >= self.end {
            self.day_hours()
        } else if self.now <= self.start {
            0
        } else {
            hours_between(self.start, self.now)
        }
    }

    pub(super) fn status(&self) -> DayStatus {
        if self.now >= self.end {
            DayStatus::Complete
        } else if self.now > self.start {
            DayStatus::InProgress
        } else {
            DayStatus::NotStarted
        }
    }

    pub(super) fn hour_start(&self, index: u32) -> DateTime<Utc> {
        self.start + TimeDelta::hours(i64::from(index))
    }

    pub(super) fn local_hour(&self, index: u32) -> u32 {
        self.hour_start(index).with_timezone(&self.tz).hour()
    }

    pub(super) fn show(&self, instant: DateTime<Utc>) -> String {
        instant
            .with_timezone(&self.tz)
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    }

    pub(super) fn show_secs(&self, secs: i64) -> String {
        self.show(DateTime::from_timestamp(secs, 0).unwrap_or_default())
    }

    pub(super) fn show_millis(&self, millis: i64) -> String {
        self.show(DateTime::from_timestamp_millis(millis).unwrap_or_default())
    }

    /// Index of the local hour slot an instant (seconds) falls in.
    pub(super) fn slot_of(&self, secs: i64) -> Option<usize> {
        let offset = secs - self.start.timestamp();
        usize::try_from(offset.div_euclid(3600)).ok()
    }
}

pub(super) fn hours_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
    u32::try_from((to - from).num_hours()).unwrap_or(0)
}

/// The first instant of `day` in `tz`; where midnight falls into a DST gap, the first
/// local time after it.
pub(super) fn local_midnight(tz: Tz, day: NaiveDate) -> Result<DateTime<Utc>, FactsError> {
    let midnight = day.and_time(NaiveTime::MIN);
    (0..=2)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + TimeDelta::hours(h)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| FactsError::NoLocalMidnight {
            day,
            time_zone: tz.name().to_owned(),
        })
}
