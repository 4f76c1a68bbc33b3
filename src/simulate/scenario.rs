//! Scenario files (TOML, docs/simulator.md): who sends leads, how people behave, and
//! which incidents happen when.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {path} is not valid: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("scenario is not consistent: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Calendar days and daily curves are in this IANA zone.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// The simulator's own key (simulator role): it may state event times.
    pub simulator_key: String,
    #[serde(default)]
    pub behaviour: Behaviour,
    pub sources: Vec<SourcePlan>,
    #[serde(default)]
    pub incidents: Vec<Incident>,
    /// Volume factor per day of the run (day 0 first); days past the list keep 1.
    #[serde(default)]
    pub day_factor: Vec<f64>,
    /// How `lead-lab eval` runs this scenario.
    #[serde(default)]
    pub eval: EvalPlan,
}

/// The run `lead-lab eval` backfills and which of its days it analyses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalPlan {
    /// Days backfilled, ending yesterday.
    pub days: u32,
    /// Days before this one are only baseline; this day and later ones are analysed
    /// (and so is every earlier day an incident touches).
    pub first_analysed_day: u32,
}

impl Default for EvalPlan {
    fn default() -> Self {
        Self {
            days: 7,
            first_analysed_day: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePlan {
    /// A source configured in the service.
    pub name: String,
    /// The source's API key.
    pub key: String,
    /// Leads on an average weekday.
    pub leads_per_day: f64,
    /// Share of leads per endpoint: `leads`, `forms`, `batch`.
    pub endpoints: BTreeMap<String, f64>,
    /// Pages leads are posted from (JSON and batch endpoints).
    pub pages: Vec<String>,
    /// Form ids (the `forms` endpoint); their pages come from the service's config.
    #[serde(default)]
    pub forms: Vec<FormPlan>,
    /// Whether the source requires consent (people then almost always give it).
    #[serde(default)]
    pub requires_consent: bool,
    /// Leads per batch request.
    #[serde(default = "five")]
    pub batch_size: usize,
    /// Relative traffic per local hour, 24 values (default: a working-day curve).
    #[serde(default = "working_day")]
    pub hourly_curve: Vec<f64>,
    /// Factor per weekday, Monday first, 7 values.
    #[serde(default = "weekdays")]
    pub weekday_factor: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormPlan {
    pub id: String,
    /// The page the form lives on (as configured in the service), for the ground truth.
    pub page: String,
}

/// How people behave, as shares of leads (0–1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behaviour {
    /// A typo that fails validation (bad email or phone).
    pub typo: f64,
    /// After a rejection or failure, the person tries again (fixed) a little later.
    pub retry_after_failure: f64,
    /// An impatient second click right after the first.
    pub double_submit: f64,
    /// The same person leaves a lead on another page the same day.
    pub repeat_submitter: f64,
    /// Leads without a phone number.
    pub no_phone: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            typo: 0.02,
            retry_after_failure: 0.6,
            double_submit: 0.01,
            repeat_submitter: 0.05,
            no_phone: 0.3,
        }
    }
}

/// Something that goes wrong on one day, in a window of local time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    pub kind: IncidentKind,
    /// Day of the run, 0 = its first day (for --live: today).
    pub day: u32,
    pub from: NaiveTime,
    /// End of the window; at or before `from`, it is on the next day (crosses midnight).
    pub to: NaiveTime,
    /// The source affected (all kinds but crm_down/crm_slow).
    #[serde(default)]
    pub source: Option<String>,
    /// foreign_key: the source whose key is used by mistake.
    #[serde(default)]
    pub key_of: Option<String>,
    /// broken_field / new_page: the page.
    #[serde(default)]
    pub page: Option<String>,
    /// broken_field: only attempts on this endpoint (`leads`, `forms`, `batch`); with
    /// no `page`, every page of the endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// broken_field: the share rises linearly from 0 at `from` to `share` at `to`
    /// instead of starting at once (a gradual failure, no step).
    #[serde(default)]
    pub ramp: bool,
    /// renamed_form: the form id the source posts to instead (one the service does not
    /// know); default `<form>-v2` for each of its forms.
    #[serde(default)]
    pub form: Option<String>,
    /// broken_field: `consent`, `phone` or `email`.
    #[serde(default)]
    pub field: Option<String>,
    /// bot_burst: requests per burst, and bursts per hour in the window.
    #[serde(default)]
    pub burst_size: Option<u32>,
    #[serde(default)]
    pub bursts_per_hour: Option<u32>,
    /// new_page: share of its leads that fail validation; duplicate_surge: share doubled;
    /// broken_field: share of the matching leads broken (default 1, with `ramp` the
    /// share reached at `to`).
    #[serde(default)]
    pub share: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// The source's key was rotated but the site still sends the old one.
    WrongKey,
    /// The source posts with another source's key.
    ForeignKey,
    /// One form field is broken on one page.
    BrokenField,
    /// One client fires bursts that trip the rate limit.
    BotBurst,
    /// The CRM answers 503.
    CrmDown,
    /// The CRM answers slower than the service waits.
    CrmSlow,
    /// The source sends nothing.
    SourceSilent,
    /// A new page appears and most of its leads fail validation.
    NewPage,
    /// People submit twice far more often.
    DuplicateSurge,
    /// The source's site posts its forms to a form id the service does not know.
    RenamedForm,
}

impl IncidentKind {
    /// The analyzer finding this incident must produce (its `FindingKind` name).
    pub fn expected_finding(self) -> &'static str {
        match self {
            IncidentKind::WrongKey => "unauthorized_cluster",
            IncidentKind::ForeignKey => "key_mismatch_cluster",
            IncidentKind::BrokenField => "failure_concentration",
            IncidentKind::BotBurst => "rate_limit_burst",
            IncidentKind::CrmDown | IncidentKind::CrmSlow => "downstream_outage",
            IncidentKind::SourceSilent => "silent_source",
            IncidentKind::NewPage => "new_page",
            IncidentKind::DuplicateSurge => "duplicate_surge",
            IncidentKind::RenamedForm => "failure_concentration",
        }
    }

    /// What the data shows while it lasts.
    pub fn expected_effect(self) -> &'static str {
        match self {
            IncidentKind::WrongKey => "the source's attempts are rejected as unauthorized (401)",
            IncidentKind::ForeignKey => {
                "the source's attempts are rejected as source_key_mismatch (403)"
            }
            IncidentKind::BrokenField => {
                "attempts on the page are rejected as invalid_field on the field (422)"
            }
            IncidentKind::BotBurst => "bursts from one client are rejected as rate_limited (429)",
            IncidentKind::CrmDown => "accepted-looking leads fail as downstream_error (502)",
            IncidentKind::CrmSlow => "leads fail as downstream_timeout (504)",
            IncidentKind::SourceSilent => "no attempts from the source",
            IncidentKind::NewPage => "a page never seen before, most of its attempts rejected",
            IncidentKind::DuplicateSurge => "many attempts rejected as duplicate (409)",
            IncidentKind::RenamedForm => {
                "the source's form posts are rejected as unknown_form (404)"
            }
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let scenario: Scenario = toml::from_str(&text).map_err(|source| ScenarioError::Parse {
            path: shown,
            source: Box::new(source),
        })?;
        scenario.check()?;
        Ok(scenario)
    }

    pub fn source(&self, name: &str) -> Option<&SourcePlan> {
        self.sources.iter().find(|s| s.name == name)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        let fail = |what: String| Err(ScenarioError::Invalid(what));
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return fail(format!(
                "time_zone `{}` is not an IANA zone",
                self.time_zone
            ));
        }
        for source in &self.sources {
            if source.hourly_curve.len() != 24 || source.weekday_factor.len() != 7 {
                return fail(format!(
                    "{}: hourly_curve needs 24 values, weekday_factor 7",
                    source.name
                ));
            }
            if let Some(bad) = source
                .endpoints
                .keys()
                .find(|e| !ENDPOINTS.contains(&e.as_str()))
            {
                return fail(format!("{}: unknown endpoint `{bad}`", source.name));
            }
            if source.pages.is_empty() {
                return fail(format!("{}: needs at least one page", source.name));
            }
            if source.endpoints.get("forms").is_some_and(|s| *s > 0.0) && source.forms.is_empty() {
                return fail(format!("{}: posts forms but lists none", source.name));
            }
        }
        if self.day_factor.iter().any(|f| !f.is_finite() || *f < 0.0) {
            return fail("day_factor values must be 0 or more".into());
        }
        if self.eval.first_analysed_day >= self.eval.days {
            return fail("eval.first_analysed_day must be before eval.days".into());
        }
        self.incidents
            .iter()
            .try_for_each(|i| self.check_incident(i))
    }

    /// The volume factor of day `offset` of the run.
    pub fn day_factor(&self, offset: u32) -> f64 {
        self.day_factor.get(offset as usize).copied().unwrap_or(1.0)
    }

    fn check_incident(&self, incident: &Incident) -> Result<(), ScenarioError> {
        let needs_source = !matches!(incident.kind, IncidentKind::CrmDown | IncidentKind::CrmSlow);
        let source_ok = incident
            .source
            .as_deref()
            .is_some_and(|s| self.source(s).is_some());
        let problem = if incident.from == incident.to {
            Some("`from` and `to` must differ")
        } else if needs_source && !source_ok {
            Some("needs a `source` of this scenario")
        } else {
            match incident.kind {
                IncidentKind::ForeignKey
                    if incident
                        .key_of
                        .as_deref()
                        .and_then(|s| self.source(s))
                        .is_none() =>
                {
                    Some("needs `key_of`, another source of this scenario")
                }
                IncidentKind::BrokenField
                    if incident.page.is_none() && incident.endpoint.is_none()
                        || !matches!(
                            incident.field.as_deref(),
                            Some("consent" | "phone" | "email")
                        ) =>
                {
                    Some("needs a `page` or an `endpoint`, and a `field` (consent, phone or email)")
                }
                IncidentKind::BrokenField
                    if incident
                        .endpoint
                        .as_deref()
                        .is_some_and(|e| !ENDPOINTS.contains(&e)) =>
                {
                    Some("`endpoint` must be leads, forms or batch")
                }
                IncidentKind::RenamedForm
                    if self
                        .source(incident.source.as_deref().unwrap_or_default())
                        .is_some_and(|s| s.forms.is_empty()) =>
                {
                    Some("needs a `source` that posts forms")
                }
                IncidentKind::NewPage if incident.page.is_none() => Some("needs a `page`"),
                _ => None,
            }
        };
        match problem {
            Some(problem) => Err(ScenarioError::Invalid(format!(
                "incident {:?} on day {}: {problem}",
                incident.kind, incident.day
            ))),
            None => Ok(()),
        }
    }
}

/// The endpoints a source posts to.
const ENDPOINTS: [&str; 3] = ["leads", "forms", "batch"];

fn utc() -> String {
    "UTC".into()
}

fn five() -> usize {
    5
}

/// Quiet nights, a morning rise, a lunch dip, an evening tail.
fn working_day() -> Vec<f64> {
    vec![
        0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1.0, 1.6, 2.0, 2.1, 1.9, 1.5, 1.7, 1.9, 1.8, 1.6, 1.3,
        1.0, 0.9, 0.8, 0.6, 0.4, 0.3,
    ]
}

fn weekdays() -> Vec<f64> {
    vec![1.1, 1.1, 1.0, 1.0, 0.9, 0.6, 0.5]
}
