//! `lead-lab serve`: the poem application, its routes and its lifecycle.

mod admission;
pub mod analyses;
mod body;
mod console;
mod health;
mod leads;
mod replies;
mod server;
mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::{EndpointExt, Route};
use poem_openapi::OpenApiService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use body::BodyLimits;
pub use replies::{BatchReply, SubmissionReply};

use crate::analyze::jobs::Analyzer;
use crate::config::Settings;
use crate::ingest::{Ingest, IngestError, setup::dedup_window};
use crate::telemetry::{LeadMetrics, ServerSpans, Telemetry, TelemetryError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Analyzer(#[from] crate::analyze::jobs::JobError),
    #[error("the server stopped with an error: {0}")]
    Server(#[from] std::io::Error),
}

/// A built service, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    ingest: Arc<Ingest>,
    analyzer: Arc<Analyzer>,
    telemetry: Telemetry,
    settings: Settings,
}

impl Application {
    /// Sets up telemetry, the pipeline (with its dedup index warmed from ClickHouse)
    /// and the listening socket. Must run inside a tokio runtime.
    pub async fn build(settings: Settings) -> Result<Self, ServeError> {
        let telemetry = Telemetry::init(&settings.otel)?;
        let metrics = LeadMetrics::new(&telemetry.meter(), telemetry.export_failures());
        let ingest = Arc::new(Ingest::new(&settings, telemetry.tracer(), metrics)?);
        warm_dedup(&ingest, &settings).await;
        let analyzer = Analyzer::new(&settings, telemetry.tracer())?;
        let listen = settings.http.listen.clone();
        let bind_error = |source| ServeError::Bind {
            addr: listen.clone(),
            source,
        };
        let listener = TcpListener::bind(&listen).await.map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            address,
            ingest,
            analyzer,
            telemetry,
            settings,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` resolves, then stops as a service should: no new
    /// connections, in-flight requests and running analyses get the grace period to
    /// finish (unfinished analyses are handed back for the next start), then telemetry
    /// is flushed.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let http = &self.settings.http;
        let grace = Duration::from_secs(http.shutdown_grace_secs);
        let limits = server::ServerLimits {
            max_connections: http.max_connections,
            header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
            grace,
        };
        self.start_analyzer().await;
        let analyzer = self.analyzer.clone();
        let app = routes(&self.settings, self.ingest, self.analyzer, &self.telemetry);
        let stopping = CancellationToken::new();
        let signalled = async {
            shutdown.await;
            stopping.cancel();
        };
        let serving = async {
            let served = server::serve(self.listener, app, limits, signalled).await;
            stopping.cancel(); // also when the server ended by itself
            served
        };
        let analyses = async {
            stopping.cancelled().await;
            analyzer.shutdown(grace).await;
        };
        let (served, ()) = tokio::join!(serving, analyses);
        self.telemetry.shutdown().await;
        served.map_err(ServeError::from)
    }
}

impl Application {
    /// Picks up runs a previous process left unfinished and starts the daily schedule.
    async fn start_analyzer(&self) {
        match self.analyzer.resume_unfinished().await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "resumed unfinished analyses"),
            Err(err) => tracing::warn!(error = %err, "cannot look for unfinished analyses"),
        }
        if self.settings.analyzer.schedule_enabled {
            self.analyzer.start_schedule();
        }
    }
}

/// The whole HTTP surface: the API, its OpenAPI spec and Swagger UI.
fn routes(
    settings: &Settings,
    ingest: Arc<Ingest>,
    analyzer: Arc<Analyzer>,
    telemetry: &Telemetry,
) -> impl poem::Endpoint + use<> {
    let api = api_service(settings, telemetry.exporting(), telemetry.export_failures());
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let limits = BodyLimits {
        max_bytes: settings.http.max_body_bytes,
        read_timeout: Duration::from_millis(settings.http.body_read_timeout_ms),
    };
    let admission = admission::Admission::new(
        settings.http.max_in_flight,
        settings.admin_token.expose(),
        limits,
        ingest.clone(),
    );
    Route::new()
        .nest("/", console::around(api))
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .data(ingest)
        .data(analyzer)
        .data(limits)
        .with(admission)
        .with(ServerSpans::new(telemetry.tracer(), &telemetry.meter()))
}

type Apis = (
    leads::LeadsApi,
    analyses::AnalysesApi,
    health::HealthApi,
    stats::StatsApi,
);

fn api_service(
    settings: &Settings,
    exporting: bool,
    failures: crate::telemetry::ExportFailures,
) -> OpenApiService<Apis, ()> {
    let health = health::HealthApi {
        exporting,
        failures,
    };
    OpenApiService::new(
        (
            leads::LeadsApi,
            analyses::AnalysesApi,
            health,
            stats::StatsApi::new(settings),
        ),
        "lead-lab",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Lead submission API. Every attempt, accepted or not, is answered with the same \
         JSON shape and recorded as an OpenTelemetry `lead.submit` span. The analysis \
         endpoints need the admin token.",
    )
}

/// The OpenAPI document, as served at /openapi.json.
pub fn openapi_spec() -> String {
    api_service(&Settings::default(), true, Default::default()).spec()
}

async fn warm_dedup(ingest: &Ingest, settings: &Settings) {
    let client = crate::store::client(&settings.clickhouse);
    match ingest.warm_dedup(&client, dedup_window(settings)).await {
        Ok(count) => tracing::info!(count, "dedup index warmed from lead_submissions"),
        Err(err) => tracing::warn!(
            error = %err,
            "dedup index starts empty: duplicates of leads accepted before this start will not be caught"
        ),
    }
}
