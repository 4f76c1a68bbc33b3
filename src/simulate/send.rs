//! Sending a plan through the real ingest path, as an OTLP-instrumented HTTP client:
//! one client span per request, its context in `traceparent`, so the simulator's trace
//! and the service's join. One lane per source keeps each source's requests in event
//! order, so rate limits and dedup decide the same way on every run of a seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use indicatif::{ProgressBar, ProgressStyle};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use serde_json::Value;

use super::plan::{Planned, Request};
use super::summary::Summary;
use crate::domain::Outcome;

/// How requests are timed.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the service answers; event times are stated (simulator headers).
    Backfill,
    /// At the plan's times, compressed by `speed`; the service's clock is the event time.
    Live {
        plan_start: DateTime<Utc>,
        wall_start: tokio::time::Instant,
        speed: f64,
        until: Option<tokio::time::Instant>,
    },
}

pub struct Sender {
    pub http: reqwest::Client,
    pub target: String,
    pub simulator_key: String,
    pub tracer: SdkTracer,
    pub time_zone: Tz,
    pub pace: Pace,
}

/// What one request's answer says about its leads: (outcome, reason) per attempt.
type Outcomes = Vec<(String, String)>;

impl Sender {
    /// Sends the whole plan; returns the counts of what the service answered.
    pub async fn run(self: Arc<Self>, plan: Vec<Planned>, progress: ProgressBar) -> Summary {
        let summary = Arc::new(Mutex::new(Summary::default()));
        let mut lanes: BTreeMap<String, Vec<Planned>> = BTreeMap::new();
        for planned in plan {
            lanes
                .entry(planned.source.clone())
                .or_default()
                .push(planned);
        }
        let tasks: Vec<_> = lanes
            .into_values()
            .map(|lane| {
                let sender = self.clone();
                let summary = summary.clone();
                let progress = progress.clone();
                tokio::spawn(async move { sender.run_lane(lane, &summary, &progress).await })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        progress.finish();
        summary.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn run_lane(&self, lane: Vec<Planned>, summary: &Mutex<Summary>, progress: &ProgressBar) {
        for planned in lane {
            if !self.wait_for(planned.at).await {
                return;
            }
            let mut next = Some(planned);
            while let Some(planned) = next.take() {
                let outcomes = self.send(&planned).await;
                let accepted = outcomes
                    .iter()
                    .all(|(o, _)| o == Outcome::Accepted.as_str());
                self.record(summary, progress, &planned, &outcomes);
                if !accepted {
                    next = planned.retry.map(|retry| *retry);
                }
            }
        }
    }

    /// Live runs sleep until the request's (compressed) time; false when past `until`.
    async fn wait_for(&self, at: DateTime<Utc>) -> bool {
        let Pace::Live {
            plan_start,
            wall_start,
            speed,
            until,
        } = self.pace
        else {
            return true;
        };
        let offset = (at - plan_start)
            .to_std()
            .unwrap_or_default()
            .div_f64(speed.max(0.001));
        let due = wall_start + offset;
        if until.is_some_and(|until| due > until) {
            return false;
        }
        tokio::time::sleep_until(due).await;
        true
    }

    fn record(
        &self,
        summary: &Mutex<Summary>,
        progress: &ProgressBar,
        planned: &Planned,
        outcomes: &Outcomes,
    ) {
        let day = planned.at.with_timezone(&self.time_zone).date_naive();
        let mut summary = summary.lock().unwrap_or_else(|e| e.into_inner());
        summary.requests += 1;
        for (outcome, reason) in outcomes {
            summary.add(day, &planned.source, outcome, reason);
        }
        progress.inc(planned.leads() as u64);
        progress.set_message(summary.outcome_line());
    }

    async fn send(&self, planned: &Planned) -> Outcomes {
        let (path, builder) = self.request(planned);
        let mut span = self
            .tracer
            .span_builder(format!("POST {path}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("url.path", path),
                KeyValue::new("lead.source", planned.source.clone()),
            ])
            .start(&self.tracer);
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        let mut headers = reqwest::header::HeaderMap::new();
        crate::telemetry::inject_trace_context(&cx, &mut headers);
        let answer = builder.headers(headers).send().await;
        let outcomes = match answer {
            Ok(response) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(response.status().as_u16()),
                ));
                outcomes_of(planned, response).await
            }
            Err(error) => {
                span.set_status(Status::error(error.to_string()));
                vec![("transport_error".into(), String::new()); 1]
            }
        };
        span.end();
        outcomes
    }

    fn request(&self, planned: &Planned) -> (&'static str, reqwest::RequestBuilder) {
        let stated = matches!(self.pace, Pace::Backfill).then_some(planned.at);
        let (path, builder) = match &planned.request {
            Request::Json(lead) => {
                let url = format!("{}/v1/leads", self.target);
                (
                    "/v1/leads",
                    self.http
                        .post(url)
                        .json(&lead.json(&planned.source, stated)),
                )
            }
            Request::Form { form_id, lead } => {
                let url = format!("{}/v1/forms/{form_id}", self.target);
                let builder = self
                    .http
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(lead.form());
                ("/v1/forms/{form_id}", builder)
            }
            Request::Batch(leads) => {
                let url = format!("{}/v1/leads/batch", self.target);
                let leads: Vec<Value> = leads
                    .iter()
                    .map(|l| l.json(&planned.source, stated))
                    .collect();
                (
                    "/v1/leads/batch",
                    self.http
                        .post(url)
                        .json(&serde_json::json!({ "leads": leads })),
                )
            }
        };
        let mut builder = builder.bearer_auth(&planned.key);
        if let Some(at) = stated {
            builder = builder
                .header("x-simulator-key", &self.simulator_key)
                .header("x-submitted-at", at.to_rfc3339());
        }
        (path, builder)
    }
}

/// Reads the service's answer: one outcome, or one per lead of a read batch.
async fn outcomes_of(planned: &Planned, response: reqwest::Response) -> Outcomes {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let one = |v: &Value| {
        (
            v["outcome"]
                .as_str()
                .unwrap_or("unreadable_answer")
                .to_owned(),
            v["reason"].as_str().unwrap_or_default().to_owned(),
        )
    };
    match (&planned.request, body["results"].as_array()) {
        (Request::Batch(_), Some(results)) if status == 200 => results.iter().map(one).collect(),
        _ => vec![one(&body)],
    }
}

/// The progress bar of a run of `leads` leads.
pub fn progress_bar(leads: u64, live: bool) -> ProgressBar {
    let bar = ProgressBar::new(leads);
    let template = if live {
        "{spinner} {elapsed_precise} {pos} leads sent ({per_sec}) {msg}"
    } else {
        "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} leads ({per_sec}, eta {eta}) {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
