//! The day's and the baseline's attempts in cells of every closed-set column and the
//! hour: what the generic detectors (gradual change, what changed) fold per subject.
//! Detector input only: never serialised (the findings carry the evidence), so the
//! prompt and the stored record do not grow with the number of subjects.

use super::*;
use crate::analyze::finding::Dimension;
use crate::domain::{Outcome, Reason};

/// The values of one cell; `field` is empty in the baseline (the rollup has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellValues {
    pub source: String,
    pub endpoint: String,
    pub page: String,
    pub form_id: String,
    pub client_id: String,
    pub outcome: String,
    pub reason: String,
    pub field: String,
}

impl CellValues {
    /// The cell's value in `dimension` (`None` when empty).
    pub fn value(&self, dimension: Dimension) -> Option<&str> {
        let v = match dimension {
            Dimension::Source => &self.source,
            Dimension::Endpoint => &self.endpoint,
            Dimension::Page => &self.page,
            Dimension::Form => &self.form_id,
            Dimension::Client => &self.client_id,
            Dimension::Field => &self.field,
            Dimension::Reason => &self.reason,
            Dimension::Outcome => &self.outcome,
        };
        (!v.is_empty()).then_some(v.as_str())
    }

    /// Rejected or failed: everything not accepted.
    pub fn failed(&self) -> bool {
        self.outcome != Outcome::Accepted.as_str()
    }

    pub fn has_reason(&self, reason: Reason) -> bool {
        self.reason == reason.as_str()
    }
}

/// Attempts of one combination of values in one hour (`hour` is the day's hour index,
/// or the local clock hour in the baseline; 0 in the day's failure cells).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    pub hour: u32,
    pub local_hour: u32,
    pub values: CellValues,
    pub attempts: u64,
    /// The first and last of these attempts, as the facts show instants: the day's
    /// cells only, so a window found in whole hours can be cut to its attempts.
    pub span: Option<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cells {
    /// The day, per hour index (no client).
    pub day: Vec<Cell>,
    /// The baseline, per local clock hour, summed over its days (no client, no field).
    pub baseline: Vec<Cell>,
    /// The day's failures by every column, the client included (no hour).
    pub failures: Vec<Cell>,
}

pub(super) fn cells(
    clock: &DayClock,
    day: &[HourCellRow],
    baseline: &[BaselineCellRow],
    groups: &[GroupRow],
) -> Cells {
    let day = day
        .iter()
        .filter_map(|r| {
            let hour = u32::try_from(r.hour_index).ok()?;
            Some(Cell {
                hour,
                local_hour: clock.local_hour(hour),
                values: CellValues {
                    source: r.source.clone(),
                    endpoint: r.endpoint.clone(),
                    page: r.page.clone(),
                    form_id: r.form_id.clone(),
                    client_id: String::new(),
                    outcome: r.outcome.clone(),
                    reason: r.reason.clone(),
                    field: r.field.clone(),
                },
                attempts: r.attempts,
                span: Some((clock.show_millis(r.first_ms), clock.show_millis(r.last_ms))),
            })
        })
        .collect();
    let baseline = baseline
        .iter()
        .map(|r| Cell {
            hour: u32::from(r.local_hour),
            local_hour: u32::from(r.local_hour),
            values: CellValues {
                source: r.source.clone(),
                endpoint: r.endpoint.clone(),
                page: r.page.clone(),
                form_id: r.form_id.clone(),
                outcome: r.outcome.clone(),
                reason: r.reason.clone(),
                ..CellValues::default()
            },
            attempts: r.attempts,
            span: None,
        })
        .collect();
    let failures = groups
        .iter()
        .filter(|g| g.outcome != Outcome::Accepted.as_str())
        .map(|g| Cell {
            values: CellValues {
                source: g.source.clone(),
                endpoint: g.endpoint.clone(),
                page: g.page.clone(),
                form_id: g.form_id.clone(),
                client_id: g.client_id.clone(),
                outcome: g.outcome.clone(),
                reason: g.reason.clone(),
                field: g.field.clone(),
            },
            attempts: g.attempts,
            ..Cell::default()
        })
        .collect();
    Cells {
        day,
        baseline,
        failures,
    }
}
