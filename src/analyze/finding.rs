//! What a detector reports: a closed set of kinds, a subject, the numbers behind it.
//! Findings are facts about the day, not advice: the narration may only restate them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

crate::closed_set! {
    #[derive(PartialOrd, Ord)]
    pub enum FindingKind {
        /// A source or endpoint received far fewer attempts than its baseline.
        VolumeDrop,
        /// A source or endpoint received far more attempts than its baseline.
        VolumeSpike,
        /// A source or endpoint failed (rejected + failed) far more often than its baseline.
        FailureRateRise,
        /// Most of the day's failures sit on one source, page or field.
        FailureConcentration,
        /// Valid keys used for the wrong source: a deployment carries a sibling's key.
        KeyMismatchCluster,
        /// Many attempts with missing, unknown, wrong or rotated keys.
        UnauthorizedCluster,
        /// One client sent a burst that the rate limit cut off.
        RateLimitBurst,
        /// A window of minutes in which delivery to the CRM failed or timed out.
        DownstreamOutage,
        /// A source that always had traffic had none for hours.
        SilentSource,
        /// A page or form with traffic today that the baseline never saw.
        NewPage,
        /// Duplicates far above the baseline.
        DuplicateSurge,
        /// p95 submission latency far above the baseline.
        LatencyRegression,
        /// Attempts the service counted that are missing from the record (lost in transit).
        RecordLoss,
        /// A subject's hourly failure share rose through the day (a trend, not one hour).
        GradualFailureRise,
        /// A value of some dimension whose failure share rose far above its baseline's,
        /// found by comparing every dimension (no hand-written detector knows it).
        FailureShift,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
}

/// What the finding is about, e.g. `source=quiz`, `page=/pricing field=consent`,
/// `client=quiz-bot`. Only closed-set values and ids, never personal data.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Subject {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A reason (`lead.reason`) the finding is about, for findings over reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An outcome (`lead.outcome`), for findings over outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

crate::closed_set! {
    /// The dimensions a submission record has, each a closed set or an id.
    #[derive(PartialOrd, Ord)]
    pub enum Dimension {
        Source,
        Endpoint,
        Page,
        Form,
        Client,
        Field,
        Reason,
        Outcome,
    }
}

impl Dimension {
    /// A subject naming one value of this dimension.
    pub fn subject(self, value: &str) -> Subject {
        let value = Some(value.to_owned());
        let mut s = Subject::default();
        match self {
            Dimension::Source => s.source = value,
            Dimension::Endpoint => s.endpoint = value,
            Dimension::Page => s.page = value,
            Dimension::Form => s.form_id = value,
            Dimension::Client => s.client_id = value,
            Dimension::Field => s.field = value,
            Dimension::Reason => s.reason = value,
            Dimension::Outcome => s.outcome = value,
        }
        s
    }
}

impl Subject {
    /// The value it names in `dimension`, if any.
    pub fn value(&self, dimension: Dimension) -> Option<&str> {
        match dimension {
            Dimension::Source => self.source.as_deref(),
            Dimension::Endpoint => self.endpoint.as_deref(),
            Dimension::Page => self.page.as_deref(),
            Dimension::Form => self.form_id.as_deref(),
            Dimension::Client => self.client_id.as_deref(),
            Dimension::Field => self.field.as_deref(),
            Dimension::Reason => self.reason.as_deref(),
            Dimension::Outcome => self.outcome.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub subject: Subject,
    pub severity: Severity,
    /// 0–1: how sure the detector is (little data → lower).
    pub confidence: f64,
    /// One plain sentence, built from the evidence only.
    pub summary: String,
    /// The numbers behind it, by name (`attempts`, `baseline_mean`, `failure_share`, …).
    pub evidence: BTreeMap<String, f64>,
    /// Start and end (RFC 3339) when the finding is a time window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<(String, String)>,
    /// The share a rate-based finding rests on, with its 95 % Wilson interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<RateInterval>,
    /// For a finding with a window: what changed inside it, most lifted first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<WindowChange>,
}

/// A value whose failure share inside a finding's window rose far above the baseline's
/// share at the same clock hours (the window's "what changed").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowChange {
    pub dimension: Dimension,
    pub value: String,
    pub failures: u64,
    pub attempts: u64,
    /// failures / attempts: of the value's own attempts for a source, endpoint, page or
    /// form; of all the window's attempts for a reason, field or outcome.
    pub share: f64,
    pub baseline_share: f64,
    /// share / baseline_share.
    pub lift: f64,
    /// The one-sided binomial test's p-value (before Benjamini–Hochberg).
    pub p_value: f64,
}

/// `count` of `attempts` (a failure share, a reason's share), its 95 % Wilson interval
/// and the baseline share it was compared with, if any.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateInterval {
    pub count: u64,
    pub attempts: u64,
    pub share: f64,
    pub low: f64,
    pub high: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// Fewer than 30 attempts, or an interval wider than 20 points.
    pub small_sample: bool,
}

impl RateInterval {
    /// The baseline share lies inside (or above) the interval: today's share may be
    /// the baseline's plus sampling noise, so the finding cannot be High.
    pub fn compatible_with_baseline(&self) -> bool {
        self.baseline.is_some_and(|b| self.low <= b)
    }
}
