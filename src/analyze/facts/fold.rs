//! Folding grouped rows into facts.

use std::cmp::Reverse;

use super::*;
use crate::domain::{Outcome, Reason};

/// A fraction rounded to 4 places; 0 when there is nothing to divide by.
pub fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    round_to(part as f64 / whole as f64, 4)
}

pub fn round_to(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// Counts of one key over grouped rows.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) attempts: u64,
    pub(super) accepted: u64,
    pub(super) rejected: u64,
    pub(super) failed: u64,
    pub(super) reasons: BTreeMap<String, u64>,
    pub(super) first_ms: Option<i64>,
    pub(super) last_ms: Option<i64>,
}

impl Tally {
    pub(super) fn add(&mut self, row: &GroupRow) {
        self.attempts += row.attempts;
        match row.outcome.as_str() {
            o if o == Outcome::Accepted.as_str() => self.accepted += row.attempts,
            o if o == Outcome::Failed.as_str() => self.failed += row.attempts,
            _ => self.rejected += row.attempts,
        }
        if !row.reason.is_empty() {
            *self.reasons.entry(row.reason.clone()).or_default() += row.attempts;
        }
        self.first_ms = Some(self.first_ms.map_or(row.first_ms, |m| m.min(row.first_ms)));
        self.last_ms = Some(self.last_ms.map_or(row.last_ms, |m| m.max(row.last_ms)));
    }

    pub(super) fn failures(&self) -> u64 {
        self.rejected + self.failed
    }

    /// Its first and last event, as the facts show instants.
    fn span(&self, clock: &DayClock) -> (String, String) {
        (
            clock.show_millis(self.first_ms.unwrap_or_default()),
            clock.show_millis(self.last_ms.unwrap_or_default()),
        )
    }
}

pub(super) fn tally_by<K: Ord>(
    rows: &[GroupRow],
    key: impl Fn(&GroupRow) -> Option<K>,
) -> BTreeMap<K, Tally> {
    let mut tallies: BTreeMap<K, Tally> = BTreeMap::new();
    for row in rows {
        if let Some(k) = key(row) {
            tallies.entry(k).or_default().add(row);
        }
    }
    tallies
}

/// Most frequent first, then by name: the order is part of the facts' determinism.
pub(super) fn named_counts(
    counts: &BTreeMap<String, u64>,
    whole: u64,
    limit: usize,
) -> Vec<NamedCount> {
    let mut list: Vec<NamedCount> = counts
        .iter()
        .map(|(name, &count)| NamedCount {
            name: name.clone(),
            count,
            share_of_attempts: rate(count, whole),
        })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    list.truncate(limit);
    list
}

pub(super) fn totals(rows: &[GroupRow]) -> Totals {
    let all = tally_by(rows, |_| Some(())).remove(&()).unwrap_or_default();
    Totals {
        attempts: all.attempts,
        accepted: all.accepted,
        rejected: all.rejected,
        failed: all.failed,
        success_rate: rate(all.accepted, all.attempts),
        failure_rate: rate(all.failures(), all.attempts),
    }
}

pub(super) fn by_outcome(totals: &Totals) -> Vec<NamedCount> {
    [
        (Outcome::Accepted, totals.accepted),
        (Outcome::Rejected, totals.rejected),
        (Outcome::Failed, totals.failed),
    ]
    .into_iter()
    .map(|(outcome, count)| NamedCount {
        name: outcome.as_str().to_owned(),
        count,
        share_of_attempts: rate(count, totals.attempts),
    })
    .collect()
}

pub(super) fn by_reason(rows: &[GroupRow], attempts: u64) -> Vec<NamedCount> {
    let all = tally_by(rows, |_| Some(())).remove(&()).unwrap_or_default();
    named_counts(&all.reasons, attempts, usize::MAX)
}

pub(super) fn breakdown(
    rows: &[GroupRow],
    key: impl Fn(&GroupRow) -> &String,
    day_failures: u64,
) -> Vec<Breakdown> {
    let mut list: Vec<Breakdown> = tally_by(rows, |r| Some(key(r).clone()))
        .into_iter()
        .map(|(name, t)| Breakdown {
            name,
            attempts: t.attempts,
            accepted: t.accepted,
            rejected: t.rejected,
            failed: t.failed,
            failure_share: rate(t.failures(), t.attempts),
            share_of_day_failures: rate(t.failures(), day_failures),
            top_reasons: named_counts(&t.reasons, t.attempts, TOP_REASONS),
        })
        .collect();
    list.sort_by(|a, b| {
        b.attempts
            .cmp(&a.attempts)
            .then_with(|| a.name.cmp(&b.name))
    });
    list
}

pub(super) fn source_reasons(clock: &DayClock, rows: &[GroupRow]) -> Vec<SourceReason> {
    let sources = tally_by(rows, |r| Some(r.source.clone()));
    let pairs = tally_by(rows, |r| {
        (!r.reason.is_empty()).then(|| (r.source.clone(), r.reason.clone()))
    });
    let mut list: Vec<SourceReason> = pairs
        .into_iter()
        .map(|((source, reason), t)| {
            let (first_event, last_event) = t.span(clock);
            let source_attempts = sources.get(&source).map_or(0, |s| s.attempts);
            SourceReason {
                share_of_source_attempts: rate(t.attempts, source_attempts),
                first_event,
                last_event,
                count: t.attempts,
                source,
                reason,
            }
        })
        .collect();
    list.sort_by_cached_key(|r| (Reverse(r.count), r.source.clone(), r.reason.clone()));
    list
}

pub(super) fn invalid_fields_by_page(clock: &DayClock, rows: &[GroupRow]) -> Vec<PageField> {
    let pages = tally_by(rows, |r| Some(r.page.clone()));
    let pairs = tally_by(rows, |r| {
        (r.reason == Reason::InvalidField.as_str()).then(|| (r.page.clone(), r.field.clone()))
    });
    let mut list: Vec<PageField> = pairs
        .into_iter()
        .map(|((page, field), t)| {
            let page_tally = pages.get(&page);
            let (first_event, last_event) = t.span(clock);
            PageField {
                share_of_page_attempts: rate(t.attempts, page_tally.map_or(0, |p| p.attempts)),
                share_of_page_failures: rate(t.attempts, page_tally.map_or(0, Tally::failures)),
                first_event,
                last_event,
                count: t.attempts,
                page,
                field,
            }
        })
        .collect();
    list.sort_by_cached_key(|f| (Reverse(f.count), f.page.clone(), f.field.clone()));
    list
}

pub(super) fn quantiles(row: &LatencyRow) -> Quantiles {
    let at = |i: usize| row.quantiles_ms.get(i).copied().unwrap_or_default();
    Quantiles {
        attempts: row.attempts,
        p50_ms: at(0),
        p95_ms: at(1),
        p99_ms: at(2),
    }
}

pub(super) fn day_latency(rows: &[LatencyRow]) -> Latency {
    let day = rows.iter().filter(|r| r.in_day == 1);
    let mut by_source: Vec<SourceQuantiles> = day
        .clone()
        .filter(|r| r.scope != ALL_SOURCES)
        .map(|r| SourceQuantiles {
            source: r.scope.clone(),
            quantiles: quantiles(r),
        })
        .collect();
    by_source.sort_by(|a, b| a.source.cmp(&b.source));
    Latency {
        overall: day.clone().find(|r| r.scope == ALL_SOURCES).map(quantiles),
        by_source,
    }
}

pub(super) fn completeness(clock: &DayClock, minutes: &[MinuteRow]) -> Completeness {
    let hourly = hour_counts(clock, minutes);
    let elapsed = clock.elapsed_hours();
    Completeness {
        status: clock.status(),
        day_start: clock.show(clock.start),
        day_end: clock.show(clock.end),
        day_hours: clock.day_hours(),
        elapsed_hours: elapsed,
        hours_without_data: (0..elapsed)
            .filter(|&h| {
                hourly
                    .get(h as usize)
                    .is_none_or(|&(attempts, _)| attempts == 0)
            })
            .map(|h| clock.local_hour(h))
            .collect(),
        first_event: minutes
            .iter()
            .map(|m| m.first_ms)
            .min()
            .map(|ms| clock.show_millis(ms)),
        last_event: minutes
            .iter()
            .map(|m| m.last_ms)
            .max()
            .map(|ms| clock.show_millis(ms)),
    }
}

/// (attempts, failures) per local hour slot of the day.
pub(super) fn hour_counts(clock: &DayClock, minutes: &[MinuteRow]) -> Vec<(u64, u64)> {
    let mut slots = vec![(0, 0); clock.day_hours() as usize];
    for m in minutes {
        if let Some(slot) = clock.slot_of(m.minute).and_then(|i| slots.get_mut(i)) {
            slot.0 += m.attempts;
            slot.1 += m.failures;
        }
    }
    slots
}

pub(super) fn shape(
    clock: &DayClock,
    minutes: &[MinuteRow],
    clients: &[ClientRow],
    burst: u64,
) -> Shape {
    let hourly = hour_counts(clock, minutes)
        .into_iter()
        .zip(0u32..)
        .map(|((attempts, failures), h)| HourSlot {
            hour_index: h,
            local_hour: clock.local_hour(h),
            start: clock.show(clock.hour_start(h)),
            attempts,
            failures,
        })
        .collect();
    // Earliest minute wins ties, so the facts do not depend on row order.
    let busiest = minutes.iter().max_by(|a, b| {
        a.attempts
            .cmp(&b.attempts)
            .then_with(|| b.minute.cmp(&a.minute))
    });
    let mut clients: Vec<ClientShape> = clients.iter().map(|c| client_shape(clock, c)).collect();
    clients.sort_by(|a, b| {
        b.max_attempts_per_minute
            .cmp(&a.max_attempts_per_minute)
            .then_with(|| a.client_id.cmp(&b.client_id))
    });
    Shape {
        hourly,
        max_attempts_per_minute: busiest.map_or(0, |m| m.attempts),
        busiest_minute: busiest.map(|m| clock.show_secs(m.minute)),
        burst_threshold_per_minute: burst,
        burst_minutes: minutes.iter().filter(|m| m.attempts >= burst).count() as u64,
        clients,
    }
}

pub(super) fn client_shape(clock: &DayClock, c: &ClientRow) -> ClientShape {
    let limited = c.rate_limited > 0;
    ClientShape {
        client_id: c.client_id.clone(),
        attempts: c.attempts,
        max_attempts_per_minute: c.max_per_minute,
        busiest_minute: clock.show_secs(c.busiest_minute),
        burst_minutes: c.burst_minutes,
        rate_limited: c.rate_limited,
        rate_limited_from: limited.then(|| clock.show_secs(c.rate_limited_first)),
        rate_limited_until: limited.then(|| clock.show_secs(c.rate_limited_last + 60)),
    }
}

pub(super) fn source_activity(
    clock: &DayClock,
    groups: &[GroupRow],
    hours: &[SourceHourRow],
    base_hourly: &[BaselineHourRow],
    baseline: &Baseline,
) -> Vec<SourceActivity> {
    let today = tally_by(groups, |r| Some(r.source.clone()));
    let every_day: BTreeSet<&String> = baseline.sources_on_every_day.iter().collect();
    let sources: BTreeSet<&String> = today.keys().chain(every_day.iter().copied()).collect();
    let elapsed = clock.elapsed_hours() as usize;
    sources
        .into_iter()
        .map(|source| {
            let mut slots = vec![0u64; elapsed];
            for row in hours.iter().filter(|r| &r.source == source) {
                if let Some(slot) = usize::try_from(row.hour_index)
                    .ok()
                    .and_then(|i| slots.get_mut(i))
                {
                    *slot += row.attempts;
                }
            }
            let profile = hourly_profile(base_hourly, source, baseline.days_with_data);
            SourceActivity {
                source: source.clone(),
                attempts: today.get(source).map_or(0, |t| t.attempts),
                active_hours: slots.iter().filter(|&&n| n > 0).count() as u32,
                traffic_on_every_baseline_day: every_day.contains(source),
                longest_silence: longest_silence(clock, &slots, &profile),
            }
        })
        .collect()
}

/// Mean attempts of a source per local clock hour over the baseline days with data.
pub(super) fn hourly_profile(rows: &[BaselineHourRow], source: &str, days: u32) -> [f64; 24] {
    let mut profile = [0.0; 24];
    if days == 0 {
        return profile;
    }
    for row in rows.iter().filter(|r| r.source == source) {
        if let Some(slot) = profile.get_mut(usize::from(row.local_hour)) {
            *slot += row.attempts as f64 / f64::from(days);
        }
    }
    profile
}

pub(super) fn longest_silence(
    clock: &DayClock,
    slots: &[u64],
    profile: &[f64; 24],
) -> Option<Silence> {
    let mut best: Option<(usize, usize)> = None;
    let mut run_start = None;
    for (i, &n) in slots
        .iter()
        .enumerate()
        .chain(std::iter::once((slots.len(), &1)))
    {
        match (n == 0, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(start)) => {
                if best.is_none_or(|(s, e)| i - start > e - s) {
                    best = Some((start, i));
                }
                run_start = None;
            }
            _ => {}
        }
    }
    let (start, end) = best?;
    let expected: f64 = (start..end)
        .map(|h| {
            profile
                .get(clock.local_hour(h as u32) as usize)
                .copied()
                .unwrap_or_default()
        })
        .sum();
    Some(Silence {
        start: clock.show(clock.hour_start(start as u32)),
        end: clock.show(clock.hour_start(end as u32)),
        hours: (end - start) as u32,
        expected_attempts: round_to(expected, 2),
    })
}

pub(super) fn submitters_facts(row: SubmitterRow, groups: &[GroupRow]) -> Submitters {
    Submitters {
        distinct_submitters: row.distinct_submitters,
        repeat_submitters: row.repeat_submitters,
        retries_after_failure: row.retries_after_failure,
        duplicate_attempts: groups
            .iter()
            .filter(|g| g.reason == Reason::Duplicate.as_str())
            .map(|g| g.attempts)
            .sum(),
        submitters_with_duplicates: row.submitters_with_duplicates,
        high_activity_threshold: HIGH_ACTIVITY_ATTEMPTS,
        high_activity_submitters: row.high_activity_submitters,
        high_activity: row
            .high_activity
            .into_iter()
            .map(|(submitter_id, attempts, failures)| HighActivitySubmitter {
                submitter_id,
                attempts,
                failures,
                failure_share: rate(failures, attempts),
            })
            .collect(),
    }
}

/// Per-name sums of the baseline rows: attempts, failures, and the days with traffic.
#[derive(Default)]
pub(super) struct BaselineTally {
    pub(super) attempts: u64,
    pub(super) failures: u64,
    pub(super) duplicates: u64,
    pub(super) days: BTreeSet<String>,
}

pub(super) fn baseline_volumes(
    rows: &[BaselineVolumeRow],
    key: impl Fn(&BaselineVolumeRow) -> &String,
    days_with_data: u32,
) -> Vec<BaselineVolume> {
    let mut tallies: BTreeMap<String, BaselineTally> = BTreeMap::new();
    for row in rows {
        let t = tallies.entry(key(row).clone()).or_default();
        t.attempts += row.attempts;
        t.failures += row.failures;
        t.duplicates += row.duplicates;
        t.days.insert(row.day.clone());
    }
    tallies
        .into_iter()
        .map(|(name, t)| BaselineVolume {
            name,
            days_with_traffic: t.days.len() as u32,
            mean_attempts_per_day: per_day(t.attempts, days_with_data),
            failure_share: rate(t.failures, t.attempts),
            mean_duplicates_per_day: per_day(t.duplicates, days_with_data),
        })
        .collect()
}

pub(super) fn per_day(total: u64, days: u32) -> f64 {
    if days == 0 {
        return 0.0;
    }
    round_to(total as f64 / f64::from(days), 2)
}

pub(super) fn build_baseline(
    query: &FactsQuery,
    clock: &DayClock,
    volume: &[BaselineVolumeRow],
    pages: &[BaselinePageRow],
    latency: &[LatencyRow],
) -> Baseline {
    let days_with_data = volume.iter().map(|r| &r.day).collect::<BTreeSet<_>>().len() as u32;
    let by_source = baseline_volumes(volume, |r| &r.source, days_with_data);
    let baseline_latency = latency.iter().filter(|r| r.in_day == 0);
    let nonempty = |values: BTreeSet<&String>| -> Vec<String> {
        values
            .into_iter()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect()
    };
    Baseline {
        requested_days: query.baseline_days,
        days_with_data,
        first_day: clock.first_baseline_day,
        last_day: clock.last_baseline_day,
        sources_on_every_day: by_source
            .iter()
            .filter(|v| days_with_data > 0 && v.days_with_traffic == days_with_data)
            .map(|v| v.name.clone())
            .collect(),
        by_endpoint: baseline_volumes(volume, |r| &r.endpoint, days_with_data),
        by_source,
        mean_duplicates_per_day: per_day(volume.iter().map(|r| r.duplicates).sum(), days_with_data),
        latency_p95_ms: baseline_latency
            .clone()
            .find(|r| r.scope == ALL_SOURCES)
            .map(|r| quantiles(r).p95_ms),
        latency_p95_ms_by_source: {
            let mut list: Vec<BaselineLatency> = baseline_latency
                .filter(|r| r.scope != ALL_SOURCES)
                .map(|r| BaselineLatency {
                    source: r.scope.clone(),
                    p95_ms: quantiles(r).p95_ms,
                })
                .collect();
            list.sort_by(|a, b| a.source.cmp(&b.source));
            list
        },
        pages_seen: nonempty(pages.iter().map(|p| &p.page).collect()),
        forms_seen: nonempty(pages.iter().map(|p| &p.form_id).collect()),
    }
}
