//! A downstream CRM to deliver to, whose outages follow the scenario: a lead whose
//! `submitted_at` falls in a crm_down window gets 503, in a crm_slow window an answer
//! slower than the service waits. Deciding by the lead's own time keeps backfills and
//! live runs alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json};
use poem::{EndpointExt, Route, Server, handler, post};
use serde_json::Value;

use super::plan::Window;
use super::scenario::IncidentKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    Down,
    Slow,
}

#[derive(Debug, Default)]
pub struct CrmState {
    outages: Vec<(DateTime<Utc>, DateTime<Utc>, Trouble)>,
    slow: Duration,
    pub received: AtomicU64,
}

impl CrmState {
    pub fn new(windows: &[Window<'_>], slow: Duration) -> Self {
        let outages = windows
            .iter()
            .filter_map(|w| {
                let trouble = match w.incident.kind {
                    IncidentKind::CrmDown => Trouble::Down,
                    IncidentKind::CrmSlow => Trouble::Slow,
                    _ => return None,
                };
                Some((w.start, w.end, trouble))
            })
            .collect();
        Self {
            outages,
            slow,
            received: AtomicU64::new(0),
        }
    }

    fn trouble_at(&self, at: DateTime<Utc>) -> Option<Trouble> {
        self.outages
            .iter()
            .find(|(start, end, _)| *start <= at && at < *end)
            .map(|(_, _, trouble)| *trouble)
    }
}

#[handler]
async fn receive(Json(lead): Json<Value>, state: Data<&Arc<CrmState>>) -> StatusCode {
    state.received.fetch_add(1, Ordering::Relaxed);
    let at = lead["submitted_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(Utc::now, |t| t.to_utc());
    match state.trouble_at(at) {
        Some(Trouble::Down) => StatusCode::SERVICE_UNAVAILABLE,
        Some(Trouble::Slow) => {
            tokio::time::sleep(state.slow).await;
            StatusCode::OK
        }
        None => StatusCode::OK,
    }
}

/// A bound fake CRM; `run` serves `POST /leads` until the future is dropped.
pub struct FakeCrm {
    acceptor: poem::listener::TcpAcceptor,
    pub url: String,
    pub state: Arc<CrmState>,
}

impl FakeCrm {
    pub async fn bind(listen: &str, state: CrmState) -> std::io::Result<Self> {
        let acceptor = TcpListener::bind(listen.to_owned()).into_acceptor().await?;
        let address = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| std::io::Error::other("no local address"))?;
        Ok(Self {
            acceptor,
            url: format!("http://{address}/leads"),
            state: Arc::new(state),
        })
    }

    pub async fn run(self) -> std::io::Result<()> {
        let app = Route::new().at("/leads", post(receive)).data(self.state);
        Server::new_with_acceptor(self.acceptor).run(app).await
    }
}
