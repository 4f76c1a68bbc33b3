//! Turning a scenario into the exact list of requests to send: deterministic for a seed
//! (ChaCha, whose stream is fixed across platforms and versions), ordered by event time.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::scenario::{Incident, IncidentKind, Scenario, SourcePlan};

/// One lead as a person submits it.
#[derive(Clone, PartialEq)]
pub struct Lead {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub page: String,
    pub consent: Option<bool>,
    pub utm_source: Option<String>,
}

crate::debug_without_personal_data!(Lead {
    page,
    consent,
    utm_source
});

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `POST /v1/leads`.
    Json(Lead),
    /// `POST /v1/forms/{form_id}`.
    Form { form_id: String, lead: Lead },
    /// `POST /v1/leads/batch`.
    Batch(Vec<Lead>),
}

/// One planned request. `retry` is sent only if this one is not accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub at: DateTime<Utc>,
    pub source: String,
    pub key: String,
    pub request: Request,
    pub retry: Option<Box<Planned>>,
}

impl Planned {
    /// Leads this request carries (a batch carries several).
    pub fn leads(&self) -> usize {
        match &self.request {
            Request::Batch(leads) => leads.len(),
            _ => 1,
        }
    }
}

/// The days to plan, in the scenario's zone.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub first_day: NaiveDate,
    pub days: u32,
}

/// An incident with its window in UTC, for the ground truth and the fake CRM.
#[derive(Debug, Clone)]
pub struct Window<'a> {
    pub incident: &'a Incident,
    pub day: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window<'_> {
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }

    /// How far into the window `at` is, 0 at its start to 1 at its end.
    fn progress(&self, at: DateTime<Utc>) -> f64 {
        let length = (self.end - self.start).num_milliseconds().max(1) as f64;
        ((at - self.start).num_milliseconds() as f64 / length).clamp(0.0, 1.0)
    }

    /// broken_field: the share of matching leads broken at `at` (ramping or not).
    fn broken_share(&self, at: DateTime<Utc>) -> f64 {
        let share = self.incident.share.unwrap_or(1.0);
        if self.incident.ramp {
            share * self.progress(at)
        } else {
            share
        }
    }
}

/// The scenario's incidents that fall inside `span`, with their windows.
pub fn windows<'a>(scenario: &'a Scenario, span: Span) -> Vec<Window<'a>> {
    let tz: Tz = scenario.time_zone.parse().unwrap_or(Tz::UTC);
    scenario
        .incidents
        .iter()
        .filter(|i| i.day < span.days)
        .map(|incident| {
            let day = span.first_day + Duration::days(i64::from(incident.day));
            // A window whose end is not after its start ends on the next day.
            let end_day = if incident.to > incident.from {
                day
            } else {
                day + Duration::days(1)
            };
            Window {
                incident,
                day,
                start: local(tz, day, incident.from),
                end: local(tz, end_day, incident.to),
            }
        })
        .collect()
}

fn local(tz: Tz, day: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    tz.from_local_datetime(&day.and_time(time))
        .earliest()
        .unwrap_or_else(|| {
            Utc.from_utc_datetime(&day.and_time(time))
                .with_timezone(&tz)
        })
        .to_utc()
}

const FIRST_NAMES: [&str; 12] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Linus",
    "Margaret", "Tim",
];
const LAST_NAMES: [&str; 10] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
    "Hamilton",
];
const UTM_SOURCES: [&str; 4] = ["google", "newsletter", "linkedin", "partner"];

/// The event times of the planned attempts one incident changed — broke, re-keyed,
/// re-routed, doubled, burst, or (for a CRM outage) delivered into it: the data's own
/// evidence of the incident, which the scorer measures windows against. Retries (sent
/// only when a first try fails, within two minutes of it) are not counted. Incidents that
/// remove traffic (source_silent) change no attempt; their evidence is the source's
/// attempts around them (`around`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence(Vec<DateTime<Utc>>, Around);

/// A silence's neighbours: the source's last attempt before it and its first after it,
/// when there are any. Between them the data cannot tell where the silence began or
/// ended: a small source at night sends nothing either way.
pub type Around = Option<(Option<DateTime<Utc>>, Option<DateTime<Utc>>)>;

impl Evidence {
    pub fn around(&self) -> Around {
        self.1
    }

    /// The first and last changed attempt in [start, end).
    pub fn span_within(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let mut inside = self.0.iter().filter(|at| start <= **at && **at < end);
        let first = *inside.next()?;
        Some((first, inside.next_back().copied().unwrap_or(first)))
    }
}

/// A run's requests, ordered by event time, and each incident's evidence (in the order
/// of [`windows`]).
#[derive(Debug, Clone)]
pub struct Plan {
    pub requests: Vec<Planned>,
    pub evidence: Vec<Evidence>,
}

/// The planner's state: the random stream, the people met so far and the attempts each
/// incident changed.
struct Planner<'a> {
    scenario: &'a Scenario,
    windows: Vec<Window<'a>>,
    tz: Tz,
    rng: ChaCha8Rng,
    people: u64,
    evidence: Vec<Vec<DateTime<Utc>>>,
}

/// A bot_burst window to plan: (window index, start, end, leads per burst, bursts per
/// hour).
type Burst = (usize, DateTime<Utc>, DateTime<Utc>, u32, u32);

/// A batch lead waiting for its request: when it happened and the incidents (window
/// indices) that changed it.
type BatchLead = (DateTime<Utc>, Lead, Vec<usize>);

/// Every request of the run (ties keep planning order) and its evidence.
pub fn plan(scenario: &Scenario, span: Span, seed: u64) -> Plan {
    let windows = windows(scenario, span);
    let mut planner = Planner {
        scenario,
        evidence: vec![Vec::new(); windows.len()],
        windows,
        tz: scenario.time_zone.parse().unwrap_or(Tz::UTC),
        rng: ChaCha8Rng::seed_from_u64(seed),
        people: 0,
    };
    let mut requests = Vec::new();
    for offset in 0..span.days {
        let day = span.first_day + Duration::days(i64::from(offset));
        let factor = scenario.day_factor(offset);
        for source in &scenario.sources {
            planner.plan_day(source, day, factor, &mut requests);
        }
    }
    requests.sort_by_key(|p| p.at);
    let evidence = planner
        .evidence
        .into_iter()
        .zip(&planner.windows)
        .map(|(mut times, window)| {
            times.sort();
            let around = (window.incident.kind == IncidentKind::SourceSilent)
                .then(|| attempts_around(&requests, window));
            Evidence(times, around)
        })
        .collect();
    Plan { requests, evidence }
}

/// The last attempt of the silenced source (every source, when the incident names none)
/// before `window` and its first after it, in `requests` (ordered by time).
fn attempts_around(
    requests: &[Planned],
    window: &Window<'_>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let of_source = |p: &&Planned| {
        window
            .incident
            .source
            .as_deref()
            .is_none_or(|s| s == p.source)
    };
    let before = requests
        .iter()
        .filter(of_source)
        .take_while(|p| p.at < window.start)
        .last()
        .map(|p| p.at);
    let after = requests
        .iter()
        .filter(of_source)
        .find(|p| p.at >= window.end)
        .map(|p| p.at);
    (before, after)
}

impl<'a> Planner<'a> {
    fn plan_day(
        &mut self,
        source: &SourcePlan,
        day: NaiveDate,
        factor: f64,
        out: &mut Vec<Planned>,
    ) {
        let weekday = day.weekday().num_days_from_monday() as usize;
        let daily = source.leads_per_day * source.weekday_factor[weekday] * factor;
        let curve_total: f64 = source.hourly_curve.iter().sum();
        let mut batch: Vec<BatchLead> = Vec::new();
        for hour in 0..24u32 {
            let expected = daily * source.hourly_curve[hour as usize] / curve_total;
            for _ in 0..self.sample_count(expected) {
                let second = self.rng.random_range(0..3600);
                let time = NaiveTime::from_num_seconds_from_midnight_opt(hour * 3600 + second, 0)
                    .unwrap_or(NaiveTime::MIN);
                let at = local(self.tz, day, time);
                self.plan_lead(source, at, &mut batch, out);
            }
        }
        self.flush_batches(source, batch, out);
        self.plan_bursts(source, day, out);
    }

    /// Expected counts become whole ones without bias: the fraction is a coin flip.
    fn sample_count(&mut self, expected: f64) -> u64 {
        let whole = expected.floor();
        let extra = u64::from(self.rng.random_bool((expected - whole).clamp(0.0, 1.0)));
        whole as u64 + extra
    }

    fn active(&self, kind: IncidentKind, source: &str, at: DateTime<Utc>) -> Option<&Window<'a>> {
        self.active_index(kind, source, at)
            .map(|n| &self.windows[n])
    }

    fn active_index(&self, kind: IncidentKind, source: &str, at: DateTime<Utc>) -> Option<usize> {
        self.windows.iter().position(|w| {
            w.incident.kind == kind
                && w.contains(at)
                && w.incident.source.as_deref().is_none_or(|s| s == source)
        })
    }

    /// Adds the incident of `kind` active for `source` at `at`, if any, to `changed`.
    fn note(&self, kind: IncidentKind, source: &str, at: DateTime<Utc>, changed: &mut Vec<usize>) {
        changed.extend(self.active_index(kind, source, at));
    }

    fn record(&mut self, changed: &[usize], at: DateTime<Utc>) {
        for &n in changed {
            self.evidence[n].push(at);
        }
    }

    fn plan_lead(
        &mut self,
        source: &SourcePlan,
        at: DateTime<Utc>,
        batch: &mut Vec<BatchLead>,
        out: &mut Vec<Planned>,
    ) {
        if self
            .active(IncidentKind::SourceSilent, &source.name, at)
            .is_some()
        {
            return;
        }
        let mut changed = Vec::new();
        let endpoint = self.pick_endpoint(source);
        let (form_id, page, renamed) = match endpoint {
            "forms" => {
                let form = &source.forms[self.rng.random_range(0..source.forms.len())];
                let form_id = self.form_id(source, &form.id, at);
                let renamed = form_id != form.id;
                if renamed {
                    self.note(IncidentKind::RenamedForm, &source.name, at, &mut changed);
                }
                (Some(form_id), form.page.clone(), renamed)
            }
            _ => (None, self.pick_page(source, at, &mut changed), false),
        };
        let mut lead = self.person(source, page);
        let fixed = lead.clone();
        let typo = self.rng.random_bool(self.scenario.behaviour.typo);
        if typo {
            lead.email = lead.email.replace('@', ".");
        }
        let broken = self.break_fields(source, endpoint, at, &mut lead, &mut changed);
        let key = self.key_for(source, at);
        for kind in [IncidentKind::WrongKey, IncidentKind::ForeignKey] {
            self.note(kind, &source.name, at, &mut changed);
        }
        if !(typo || broken || renamed || key != source.key) {
            // A lead the service accepts is delivered: a CRM outage changes its delivery.
            for kind in [IncidentKind::CrmDown, IncidentKind::CrmSlow] {
                self.note(kind, &source.name, at, &mut changed);
            }
        }
        if endpoint == "batch" {
            batch.push((at, lead, changed));
            return;
        }
        self.record(&changed, at);
        let request = match form_id {
            Some(form_id) => Request::Form { form_id, lead },
            None => Request::Json(lead),
        };
        let mut planned = Planned {
            at,
            source: source.name.clone(),
            key,
            request,
            retry: None,
        };
        let retries = self
            .rng
            .random_bool(self.scenario.behaviour.retry_after_failure);
        if retries && !broken {
            // The person fixes what they can (a typo) and tries again a minute later.
            let mut retry = planned.clone();
            retry.at = at + Duration::seconds(self.rng.random_range(30..120));
            // The key the site holds at the retry's time: a key incident may have ended
            // in between, and the retry must not carry it past the incident's window.
            retry.key = self.key_for(source, retry.at);
            retry.request = with_lead(&retry.request, fixed);
            planned.retry = Some(Box::new(retry));
        }
        let double = self.double_submit_share(source, at);
        if self.rng.random_bool(double) {
            let mut again = planned.clone();
            again.at = at + Duration::seconds(self.rng.random_range(1..4));
            again.key = self.key_for(source, again.at);
            again.retry = None;
            let mut doubled = Vec::new();
            self.note(IncidentKind::DuplicateSurge, &source.name, at, &mut doubled);
            for kind in [IncidentKind::WrongKey, IncidentKind::ForeignKey] {
                self.note(kind, &source.name, again.at, &mut doubled);
            }
            self.record(&doubled, again.at);
            out.push(again);
        }
        out.push(planned);
    }

    fn pick_endpoint(&mut self, source: &SourcePlan) -> &'static str {
        let total: f64 = source.endpoints.values().sum();
        let mut roll = self.rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
        for (name, share) in &source.endpoints {
            if roll < *share {
                return match name.as_str() {
                    "forms" => "forms",
                    "batch" => "batch",
                    _ => "leads",
                };
            }
            roll -= share;
        }
        "leads"
    }

    fn pick_page(
        &mut self,
        source: &SourcePlan,
        at: DateTime<Utc>,
        changed: &mut Vec<usize>,
    ) -> String {
        if let Some(n) = self.active_index(IncidentKind::NewPage, &source.name, at) {
            let page = self.windows[n].incident.page.clone().unwrap_or_default();
            if self.rng.random_bool(0.5) {
                changed.push(n);
                return page;
            }
        }
        source.pages[self.rng.random_range(0..source.pages.len())].clone()
    }

    fn person(&mut self, source: &SourcePlan, page: String) -> Lead {
        let repeat = self.people > 0
            && self
                .rng
                .random_bool(self.scenario.behaviour.repeat_submitter);
        let id = if repeat {
            self.rng
                .random_range(self.people.saturating_sub(50)..self.people)
        } else {
            self.people += 1;
            self.people
        };
        let first = FIRST_NAMES[(id % FIRST_NAMES.len() as u64) as usize];
        let last = LAST_NAMES[(id / 7 % LAST_NAMES.len() as u64) as usize];
        let has_phone = !self.rng.random_bool(self.scenario.behaviour.no_phone);
        let consent = source.requires_consent || self.rng.random_bool(0.8);
        Lead {
            name: format!("{first} {last}"),
            email: format!(
                "{}.{}{id}@example.test",
                first.to_lowercase(),
                last.to_lowercase()
            ),
            phone: has_phone.then(|| format!("+1555{:07}", id % 10_000_000)),
            page,
            consent: Some(consent),
            utm_source: Some(UTM_SOURCES[self.rng.random_range(0..UTM_SOURCES.len())].to_owned()),
        }
    }

    /// renamed_form: the id the site posts the form to right now.
    fn form_id(&self, source: &SourcePlan, id: &str, at: DateTime<Utc>) -> String {
        match self.active(IncidentKind::RenamedForm, &source.name, at) {
            Some(window) => window
                .incident
                .form
                .clone()
                .unwrap_or_else(|| format!("{id}-v2")),
            None => id.to_owned(),
        }
    }

    /// Applies broken_field and new_page breakage (adding a broken field's incident to
    /// `changed`); says whether the lead is broken for good (a retry would fail the same
    /// way, so people give up).
    fn break_fields(
        &mut self,
        source: &SourcePlan,
        endpoint: &str,
        at: DateTime<Utc>,
        lead: &mut Lead,
        changed: &mut Vec<usize>,
    ) -> bool {
        let broken_field = self
            .active_index(IncidentKind::BrokenField, &source.name, at)
            .filter(|n| {
                let i = self.windows[*n].incident;
                i.page.as_deref().is_none_or(|p| p == lead.page)
                    && i.endpoint.as_deref().is_none_or(|e| e == endpoint)
            })
            .map(|n| {
                let w = &self.windows[n];
                (n, w.incident.field.clone(), w.broken_share(at))
            });
        // Drawn only for partial shares, so whole-share scenarios keep their stream.
        if let Some((n, field, share)) = broken_field
            && (share >= 1.0 || self.rng.random_bool(share.clamp(0.0, 1.0)))
        {
            changed.push(n);
            match field.as_deref() {
                Some("consent") => lead.consent = None,
                Some("phone") => lead.phone = Some("call-me".into()),
                _ => lead.email = "not-an-address".into(),
            }
            return true;
        }
        if let Some(window) = self.active(IncidentKind::NewPage, &source.name, at)
            && window.incident.page.as_deref() == Some(lead.page.as_str())
            && self.rng.random_bool(window.incident.share.unwrap_or(0.7))
        {
            lead.phone = Some("12".into());
            return true;
        }
        false
    }

    fn key_for(&self, source: &SourcePlan, at: DateTime<Utc>) -> String {
        if self
            .active(IncidentKind::WrongKey, &source.name, at)
            .is_some()
        {
            return format!("rotated-{}-key", source.name);
        }
        if let Some(window) = self.active(IncidentKind::ForeignKey, &source.name, at) {
            let other = window
                .incident
                .key_of
                .as_deref()
                .and_then(|s| self.scenario.source(s));
            if let Some(other) = other {
                return other.key.clone();
            }
        }
        source.key.clone()
    }

    fn double_submit_share(&self, source: &SourcePlan, at: DateTime<Utc>) -> f64 {
        match self.active(IncidentKind::DuplicateSurge, &source.name, at) {
            Some(window) => window.incident.share.unwrap_or(0.5),
            None => self.scenario.behaviour.double_submit,
        }
    }

    /// Groups the day's batch leads into requests of `batch_size`, sent when the first
    /// lead of each group happened.
    /// The request's time is every lead's stated time, so it is the time of their
    /// evidence too.
    fn flush_batches(
        &mut self,
        source: &SourcePlan,
        mut leads: Vec<BatchLead>,
        out: &mut Vec<Planned>,
    ) {
        leads.sort_by_key(|(at, ..)| *at);
        for chunk in leads.chunks(source.batch_size.max(1)) {
            let at = chunk[0].0;
            for (.., changed) in chunk {
                self.record(changed, at);
            }
            out.push(Planned {
                at,
                source: source.name.clone(),
                key: self.key_for(source, at),
                request: Request::Batch(chunk.iter().map(|(_, lead, _)| lead.clone()).collect()),
                retry: None,
            });
        }
    }

    /// bot_burst: bursts of valid leads a couple of seconds long from one client.
    fn plan_bursts(&mut self, source: &SourcePlan, day: NaiveDate, out: &mut Vec<Planned>) {
        let bursts: Vec<Burst> = self
            .windows
            .iter()
            .enumerate()
            .filter(|(_, w)| w.incident.kind == IncidentKind::BotBurst && w.day == day)
            .filter(|(_, w)| w.incident.source.as_deref() == Some(source.name.as_str()))
            .map(|(n, w)| {
                let size = w.incident.burst_size.unwrap_or(60);
                let per_hour = w.incident.bursts_per_hour.unwrap_or(6);
                (n, w.start, w.end, size, per_hour)
            })
            .collect();
        for (n, start, end, size, per_hour) in bursts {
            let every = Duration::seconds(3600 / i64::from(per_hour.max(1)));
            let mut at = start;
            while at < end {
                for i in 0..size {
                    let page = source.pages[self.rng.random_range(0..source.pages.len())].clone();
                    let sent =
                        at + Duration::milliseconds(i64::from(i) * 2_000 / i64::from(size.max(1)));
                    self.evidence[n].push(sent);
                    out.push(Planned {
                        at: sent,
                        source: source.name.clone(),
                        key: source.key.clone(),
                        request: Request::Json(self.person(source, page)),
                        retry: None,
                    });
                }
                at += every;
            }
        }
    }
}

fn with_lead(request: &Request, lead: Lead) -> Request {
    match request {
        Request::Form { form_id, .. } => Request::Form {
            form_id: form_id.clone(),
            lead,
        },
        _ => Request::Json(lead),
    }
}

impl Lead {
    /// The JSON body of the lead, for `source`, stating when it happened.
    pub fn json(&self, source: &str, at: Option<DateTime<Utc>>) -> Value {
        let mut body = json!({
            "name": self.name,
            "email": self.email,
            "source": source,
            "page": self.page,
        });
        if let Some(consent) = self.consent {
            body["consent"] = json!(consent);
        }
        if let Some(phone) = &self.phone {
            body["phone"] = json!(phone);
        }
        if let Some(utm) = &self.utm_source {
            body["utm"] = json!({ "source": utm });
        }
        if let Some(at) = at {
            body["submitted_at"] = json!(at.to_rfc3339());
        }
        body
    }

    /// The urlencoded body of an HTML form post.
    pub fn form(&self) -> String {
        let mut fields = vec![("name", self.name.clone()), ("email", self.email.clone())];
        if let Some(phone) = &self.phone {
            fields.push(("phone", phone.clone()));
        }
        if self.consent == Some(true) {
            fields.push(("consent", "on".into()));
        }
        if let Some(utm) = &self.utm_source {
            fields.push(("utm_source", utm.clone()));
        }
        fields
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests;
