//! A small typed client for the model server, in one of two dialects (`llm.provider`):
//! Ollama's API (`ollama`) or the OpenAI-compatible one (`openai`: llama.cpp's
//! llama-server, vLLM, LM Studio, Ollama's own `/v1`). Both get the same timeouts, the
//! same error kinds, the same sampling (temperature 0, a fixed seed) and report the
//! server's own token counts, never an estimate.
//!
//! Before a chat the client learns, once, how long a context the model takes (Ollama's
//! `/api/show`, the OpenAI server's `/v1/models`, else `llm.max_context_tokens`), and
//! whether the server serves the model at all: the prompt is sized to that context.

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::config::{LlmProvider, LlmSettings, Secret};

mod ollama;
mod openai;

/// Smallest context asked of Ollama when the window allows it: Ollama's own default.
const MIN_CONTEXT_TOKENS: u32 = 4096;

/// Characters per token assumed when sizing a prompt's data (the user message: compact
/// JSON). Measured with SmolLM2's tokenizer: 2.34 on a day's facts (digits are single
/// tokens); larger vocabularies (llama 3) do better. The lower figure leaves headroom.
pub const CHARS_PER_TOKEN: usize = 2;

/// The same for the system message, English prose: measured 3.84 with SmolLM2.
pub const PROSE_CHARS_PER_TOKEN: usize = 3;

/// Sampling temperature of every request: the narration restates facts, it does not invent.
pub const TEMPERATURE: f64 = 0.0;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("invalid model server settings: {0}")]
    Settings(String),
    #[error("cannot reach {server}: {message}")]
    Connect {
        server: &'static str,
        message: String,
    },
    #[error("{server} did not answer within {ms} ms")]
    Timeout { server: &'static str, ms: u64 },
    #[error("model {model} is not available in {server} ({hint}): {message}")]
    ModelNotFound {
        server: &'static str,
        model: String,
        hint: &'static str,
        message: String,
    },
    #[error("{server} is overloaded ({status}): {message}")]
    Overloaded {
        server: &'static str,
        status: u16,
        message: String,
    },
    #[error("{server} answered HTTP {status}: {message}")]
    Http {
        server: &'static str,
        status: u16,
        message: String,
    },
    #[error("the answer of {server} could not be decoded: {message}")]
    Malformed {
        server: &'static str,
        message: String,
    },
    #[error("the model stopped early (done_reason {0})")]
    DoneReason(String),
}

impl LlmError {
    /// Whether the model's output, not the server, was at fault: the same request may
    /// well succeed when asked again. Every other error is the server's or the setup's.
    pub fn is_bad_output(&self) -> bool {
        matches!(self, Self::Malformed { .. } | Self::DoneReason(_))
    }

    /// A short, closed-set name of the error, for span attributes (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Settings(_) => "settings",
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::Overloaded { .. } => "overloaded",
            Self::Http { .. } => "http",
            Self::Malformed { .. } => "malformed",
            Self::DoneReason(_) => "done_reason",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// One chat call. The client adds the model, the sampling options and the overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// JSON Schema the answer must follow (structured output), if any.
    pub format: Option<Value>,
    /// Most tokens the answer may take; also reserved in the context.
    pub max_output_tokens: u32,
}

impl ChatRequest {
    /// The prompt's tokens, estimated from its characters (see [`CHARS_PER_TOKEN`]).
    pub fn estimated_prompt_tokens(&self) -> usize {
        self.messages.iter().map(Message::estimated_tokens).sum()
    }
}

impl Message {
    /// Its tokens, estimated: system messages are prose, the others data.
    pub fn estimated_tokens(&self) -> usize {
        let per_token = match self.role {
            Role::System => PROSE_CHARS_PER_TOKEN,
            Role::User | Role::Assistant => CHARS_PER_TOKEN,
        };
        self.content.len().div_ceil(per_token)
    }
}

/// What the analyzer needs from an answer. Counts are absent when the server leaves
/// them out; they are never estimated.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The model that answered, as the server names it.
    pub model: String,
    pub content: String,
    pub done_reason: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
}

impl ChatResponse {
    /// An answer that stopped for any reason but `stop` (e.g. `length`: it hit the
    /// output limit) is unusable: its JSON is cut off.
    pub fn stopped_early(&self) -> Option<LlmError> {
        match self.done_reason.as_deref() {
            Some("stop") => None,
            other => Some(LlmError::DoneReason(other.unwrap_or("none").to_owned())),
        }
    }
}

/// The model the dev model server (llm/local/server.py) serves.
pub const DEV_MODEL: &str = "smollm2:135m";

/// What to say next to a report the dev model wrote: its words are not to be read as
/// an analysis.
pub fn dev_model_note(model: &str) -> Option<&'static str> {
    (model == DEV_MODEL).then_some(
        "written by the 135M dev model, which proves the plumbing, not the quality of a \
         summary; point llm.url and llm.model at llama3.1:8b for real narration",
    )
}

/// What the client learnt about the model before the first chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model's context length as the server states it, if it does.
    pub context_length: Option<u32>,
}

pub struct LlmClient {
    http: reqwest::Client,
    base: String,
    provider: LlmProvider,
    model: String,
    api_key: Secret,
    keep_alive: String,
    seed: i64,
    timeout_ms: u64,
    max_context_tokens: u32,
    max_output_tokens: u32,
    /// Asked once: it changes only when the model is re-pulled or the server restarted,
    /// and asking before every chat would double the calls.
    info: OnceCell<ModelInfo>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("provider", &self.provider)
            .field("base", &self.base)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl LlmClient {
    pub fn new(settings: &LlmSettings) -> Result<Self, LlmError> {
        let mut base = settings.url.trim_end_matches('/').to_owned();
        if settings.provider == LlmProvider::Openai {
            // Both `http://host:port` and `http://host:port/v1` are common spellings.
            if let Some(stripped) = base.strip_suffix("/v1") {
                base = stripped.to_owned();
            }
        }
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LlmError::Settings(format!(
                "llm.url must be an http(s) URL, got {:?}",
                settings.url
            )));
        }
        if settings.model.trim().is_empty() {
            return Err(LlmError::Settings("llm.model is empty".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()
            .map_err(|err| LlmError::Settings(err.to_string()))?;
        Ok(Self {
            http,
            base,
            provider: settings.provider,
            model: settings.model.clone(),
            api_key: settings.api_key.clone(),
            keep_alive: settings.keep_alive.clone(),
            seed: settings.seed,
            timeout_ms: settings.timeout_ms,
            max_context_tokens: settings.max_context_tokens.max(1024),
            max_output_tokens: settings.max_output_tokens,
            info: OnceCell::new(),
        })
    }

    /// The model every request asks for.
    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn provider(&self) -> LlmProvider {
        self.provider
    }

    /// The sampling seed every request is sent with.
    pub fn seed(&self) -> i64 {
        self.seed
    }

    /// How the server is named in errors.
    fn server(&self) -> &'static str {
        match self.provider {
            LlmProvider::Ollama => "Ollama",
            LlmProvider::Openai => "the OpenAI-compatible server",
        }
    }

    /// The context the prompt and the answer must fit together: the model's own length
    /// from the server, at most `llm.max_context_tokens`. Fails when the server cannot
    /// be reached or does not serve the model (a chat would fail the same way).
    pub async fn context_window(&self) -> Result<u32, LlmError> {
        let info = self.model_info().await?;
        Ok(info.context_length.map_or(self.max_context_tokens, |own| {
            own.min(self.max_context_tokens)
        }))
    }

    /// Tokens reserved for the answer in a window: `llm.max_output_tokens`, at most a
    /// quarter of the window, so a small model's context still holds the facts.
    pub fn output_tokens(&self, window: u32) -> u32 {
        self.max_output_tokens.min(window / 4).max(1)
    }

    /// One non-streamed chat call. The answer may have stopped early (see
    /// [`ChatResponse::stopped_early`]): its tokens were spent and are counted all the same.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let window = self.context_window().await?;
        match self.provider {
            LlmProvider::Ollama => ollama::chat(self, request, window).await,
            LlmProvider::Openai => openai::chat(self, request).await,
        }
    }

    /// Whether the server serves the model. For Ollama a bare name matches `:latest`.
    pub async fn has_model(&self) -> Result<bool, LlmError> {
        match self.provider {
            LlmProvider::Ollama => ollama::has_model(self).await,
            LlmProvider::Openai => Ok(openai::model_info(self).await.is_ok()),
        }
    }

    /// The model's context length as the server states it.
    pub async fn context_length(&self) -> Result<Option<u32>, LlmError> {
        Ok(self.fetch_info().await?.context_length)
    }

    async fn fetch_info(&self) -> Result<ModelInfo, LlmError> {
        match self.provider {
            LlmProvider::Ollama => ollama::model_info(self).await,
            LlmProvider::Openai => openai::model_info(self).await,
        }
    }

    /// The cached model info. Transport errors and a missing model end here; any other
    /// failure only means the length is unknown, and is not cached so a later call
    /// asks again.
    async fn model_info(&self) -> Result<ModelInfo, LlmError> {
        if let Some(known) = self.info.get() {
            return Ok(*known);
        }
        match self.fetch_info().await {
            Ok(info) => Ok(*self.info.get_or_init(|| async { info }).await),
            Err(
                err @ (LlmError::Connect { .. }
                | LlmError::Timeout { .. }
                | LlmError::ModelNotFound { .. }),
            ) => Err(err),
            Err(err) => {
                tracing::debug!(error = %err, "context length unknown; using llm.max_context_tokens");
                Ok(ModelInfo {
                    context_length: None,
                })
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.get(self.url(path)))
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, LlmError> {
        let request = self.authorized(self.http.post(self.url(path)).json(body));
        let response = self.send(request).await?;
        self.decode(response).await
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.api_key.is_empty() {
            request
        } else {
            request.bearer_auth(self.api_key.expose())
        }
    }

    /// Reads the whole body, then decodes it, so a body that is not the expected JSON
    /// is `Malformed` while a body cut off by the timeout is still `Timeout`.
    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, LlmError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.transport_error(&err))?;
        serde_json::from_slice(&bytes).map_err(|err| LlmError::Malformed {
            server: self.server(),
            message: err.to_string(),
        })
    }

    /// Sends and maps HTTP errors to their kinds, reading the error body of either
    /// dialect (`{"error": "…"}` or `{"error": {"message": "…"}}`).
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, LlmError> {
        let response = request
            .send()
            .await
            .map_err(|err| self.transport_error(&err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response
            .text()
            .await
            .map_err(|err| self.transport_error(&err))?;
        let message = error_message(&text);
        let server = self.server();
        Err(match status {
            StatusCode::NOT_FOUND => self.not_found(message),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                LlmError::Overloaded {
                    server,
                    status: status.as_u16(),
                    message,
                }
            }
            _ => LlmError::Http {
                server,
                status: status.as_u16(),
                message,
            },
        })
    }

    fn not_found(&self, message: String) -> LlmError {
        LlmError::ModelNotFound {
            server: self.server(),
            model: self.model.clone(),
            hint: match self.provider {
                LlmProvider::Ollama => "pull it first",
                LlmProvider::Openai => "check llm.model against /v1/models",
            },
            message,
        }
    }

    /// A connect timeout is `Connect` (nothing listens); any other timeout is the
    /// whole-request one.
    fn transport_error(&self, err: &reqwest::Error) -> LlmError {
        if err.is_timeout() && !err.is_connect() {
            LlmError::Timeout {
                server: self.server(),
                ms: self.timeout_ms,
            }
        } else {
            LlmError::Connect {
                server: self.server(),
                message: error_chain(err),
            }
        }
    }
}

fn error_message(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => match &value["error"] {
            Value::String(message) => message.clone(),
            Value::Object(fields) => fields
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| value["error"].to_string(), str::to_owned),
            _ => text.to_owned(),
        },
        Err(_) => text.to_owned(),
    }
}

/// reqwest's top-level message ("error sending request") hides the cause; name it.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `num_ctx` for a prompt: its estimated tokens plus the answer's, rounded up to a
/// power of two (fewer distinct sizes, so Ollama reloads the model less often), at
/// least 4096 when the window allows, at most the window.
pub fn context_tokens(prompt_tokens: usize, answer_tokens: u32, window: u32) -> u32 {
    u32::try_from(prompt_tokens)
        .unwrap_or(u32::MAX)
        .saturating_add(answer_tokens)
        .checked_next_power_of_two()
        .unwrap_or(u32::MAX)
        .max(MIN_CONTEXT_TOKENS)
        .min(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_a_power_of_two_at_least_the_default() {
        assert_eq!(context_tokens(150, 1024, 32_768), 4096);
        assert_eq!(context_tokens(5000, 1024, 32_768), 8192);
        assert_eq!(context_tokens(7200, 1024, 32_768), 16_384);
    }

    #[test]
    fn context_is_capped_by_the_window() {
        assert_eq!(context_tokens(100_000, 1024, 32_768), 32_768);
        assert_eq!(context_tokens(100_000, 1024, 8192), 8192);
        assert_eq!(context_tokens(150, 256, 2048), 2048);
        assert_eq!(context_tokens(usize::MAX, u32::MAX, 32_768), 32_768);
    }

    #[test]
    fn settings_are_checked() {
        let settings = LlmSettings {
            url: "localhost:11434".into(),
            ..LlmSettings::default()
        };
        assert!(matches!(
            LlmClient::new(&settings),
            Err(LlmError::Settings(_))
        ));
    }

    #[test]
    fn the_answer_budget_is_at_most_a_quarter_of_the_window() {
        let client = LlmClient::new(&LlmSettings::default()).expect("default settings");
        assert_eq!(client.output_tokens(32_768), 3072);
        assert_eq!(client.output_tokens(8192), 2048);
        assert_eq!(client.output_tokens(4096), 1024);
    }

    #[test]
    fn error_bodies_of_both_dialects_are_read() {
        assert_eq!(
            error_message(r#"{"error":"model \"x\" not found"}"#),
            "model \"x\" not found"
        );
        assert_eq!(
            error_message(r#"{"error":{"code":400,"message":"too long","type":"x"}}"#),
            "too long"
        );
        assert_eq!(
            error_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn the_api_key_is_not_in_debug_output() {
        let settings = LlmSettings {
            api_key: "sk-secret".into(),
            ..LlmSettings::default()
        };
        let client = LlmClient::new(&settings).expect("valid");
        assert!(!format!("{client:?}").contains("sk-secret"));
    }
}
