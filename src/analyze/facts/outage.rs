//! Downstream windows by evidence: a run of failed deliveries ends at the first
//! successful delivery, not after some minutes without failures. Sparse traffic (a lead
//! every quarter hour at night) leaves long empty gaps inside one outage; only a
//! delivered lead shows the CRM answering again.

use super::*;

/// A run being built, in milliseconds.
struct Run {
    first_ms: i64,
    last_ms: i64,
    first_minute: i64,
    last_minute: i64,
    minutes_with_failures: u64,
    timeouts: u64,
    errors: u64,
    last_delivery_before: Option<i64>,
    from_previous_day: bool,
}

/// Walks the day's minutes in order; `edges` are the delivery outcomes just before and
/// just after the day, which say whether a run crosses a local midnight.
struct Walk<'a> {
    clock: &'a DayClock,
    minutes: &'a [MinuteRow],
    failing_at_start: bool,
    delivered_in_day: bool,
    last_delivery: Option<i64>,
    run: Option<Run>,
    windows: Vec<DownstreamWindow>,
}

impl Walk<'_> {
    fn fail(&mut self, m: &MinuteRow) {
        let run = self.run.get_or_insert(Run {
            first_ms: m.downstream_first_ms,
            last_ms: m.downstream_last_ms,
            first_minute: m.minute,
            last_minute: m.minute,
            minutes_with_failures: 0,
            timeouts: 0,
            errors: 0,
            last_delivery_before: self.last_delivery,
            from_previous_day: self.failing_at_start && !self.delivered_in_day,
        });
        run.last_ms = m.downstream_last_ms;
        run.last_minute = m.minute;
        run.minutes_with_failures += 1;
        run.timeouts += m.downstream_timeouts;
        run.errors += m.downstream_errors;
    }

    /// A delivery at `first_ms`..`last_ms` ends the run in progress.
    fn deliver(&mut self, first_ms: i64, last_ms: i64) {
        if let Some(run) = self.run.take() {
            let window = self.window(run, Some(first_ms), false);
            self.windows.push(window);
        }
        self.delivered_in_day = true;
        self.last_delivery = Some(last_ms);
    }

    fn minute(&mut self, m: &MinuteRow) {
        let fails = m.downstream_timeouts + m.downstream_errors > 0;
        let delivered = m.delivered > 0;
        match (fails, delivered) {
            (false, false) => {}
            (false, true) => self.deliver(m.delivered_first_ms, m.delivered_last_ms),
            (true, false) => self.fail(m),
            // Deliveries before the minute's failures end the earlier run; after them,
            // they end this one. Interleaved, the minute's failures are a run of their own
            // (a flaky CRM, not an outage).
            (true, true) if m.delivered_last_ms < m.downstream_first_ms => {
                self.deliver(m.delivered_first_ms, m.delivered_last_ms);
                self.fail(m);
            }
            (true, true) if m.delivered_first_ms > m.downstream_last_ms => {
                self.fail(m);
                self.deliver(m.delivered_first_ms, m.delivered_last_ms);
            }
            (true, true) => {
                self.deliver(m.delivered_first_ms, m.delivered_first_ms);
                self.fail(m);
                self.deliver(m.delivered_last_ms, m.delivered_last_ms);
            }
        }
    }

    fn window(&self, run: Run, next: Option<i64>, into_next_day: bool) -> DownstreamWindow {
        let start_ms = if run.from_previous_day {
            self.clock.start.timestamp_millis()
        } else {
            run.first_ms
        };
        let end_ms = if into_next_day {
            self.clock.end.timestamp_millis()
        } else {
            run.last_ms
        };
        let (from, to) = (
            start_ms.div_euclid(1000).min(run.first_minute),
            run.last_minute,
        );
        let attempts = self
            .minutes
            .iter()
            .filter(|m| (from..=to).contains(&m.minute))
            .map(|m| m.attempts)
            .sum();
        let failures = run.timeouts + run.errors;
        DownstreamWindow {
            start: self.clock.show_millis(start_ms),
            end: self.clock.show_millis(end_ms),
            span_minutes: whole_minutes(end_ms - start_ms).max(1),
            minutes_with_failures: run.minutes_with_failures,
            timeouts: run.timeouts,
            errors: run.errors,
            attempts,
            downstream_failure_share: rate(failures, attempts),
            last_delivery_before: run
                .last_delivery_before
                .map(|ms| self.clock.show_millis(ms)),
            next_delivery_after: next.map(|ms| self.clock.show_millis(ms)),
            uncertainty_minutes: next.map(|ms| whole_minutes(ms - run.last_ms)),
            from_previous_day: run.from_previous_day,
            into_next_day,
        }
    }
}

/// Milliseconds as whole minutes, rounded up.
fn whole_minutes(ms: i64) -> u64 {
    u64::try_from((ms.max(0) + 59_999) / 60_000).unwrap_or(0)
}

pub(super) fn downstream_windows(
    clock: &DayClock,
    minutes: &[MinuteRow],
    (before, after): (Option<EdgeRow>, Option<EdgeRow>),
) -> Vec<DownstreamWindow> {
    let mut walk = Walk {
        clock,
        minutes,
        failing_at_start: before.is_some_and(|e| e.failed == 1),
        delivered_in_day: false,
        last_delivery: before.filter(|e| e.failed == 0).map(|e| e.at_ms),
        run: None,
        windows: Vec::new(),
    };
    for m in minutes {
        walk.minute(m);
    }
    if let Some(run) = walk.run.take() {
        let into_next_day = after.is_some_and(|e| e.failed == 1);
        let next = after.filter(|e| e.failed == 0).map(|e| e.at_ms);
        let window = walk.window(run, next, into_next_day);
        walk.windows.push(window);
    }
    walk.windows
}
