//! Liveness and readiness.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

#[derive(Tags)]
enum ApiTags {
    /// Health of the service.
    Health,
}

#[derive(Debug, Object)]
pub struct HealthReply {
    pub status: String,
    /// Spans and metric points lost since start (a full export queue, a failed export).
    pub telemetry_export_failures: u64,
}

#[derive(Debug, ApiResponse)]
pub enum ReadyResponse {
    /// Ready to take leads with telemetry export configured.
    #[oai(status = 200)]
    Ready(Json<HealthReply>),
    /// Serving, but submissions would not be recorded (telemetry export is off).
    #[oai(status = 503)]
    NotReady(Json<HealthReply>),
}

pub struct HealthApi {
    pub exporting: bool,
    pub failures: crate::telemetry::ExportFailures,
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// The process is up.
    #[oai(path = "/healthz", method = "get")]
    async fn healthz(&self) -> Json<HealthReply> {
        Json(self.reply("ok"))
    }

    /// The service can take leads and record them: telemetry export is configured.
    #[oai(path = "/readyz", method = "get")]
    async fn readyz(&self) -> ReadyResponse {
        if self.exporting {
            ReadyResponse::Ready(Json(self.reply("ready")))
        } else {
            ReadyResponse::NotReady(Json(self.reply("telemetry export is disabled")))
        }
    }
}

impl HealthApi {
    fn reply(&self, status: &str) -> HealthReply {
        HealthReply {
            status: status.into(),
            telemetry_export_failures: self.failures.get(),
        }
    }
}
