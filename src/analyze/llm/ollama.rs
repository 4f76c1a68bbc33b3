//! A small typed client for the three Ollama endpoints the analyzer needs: `/api/chat`
//! (one non-streamed answer), `/api/tags` (is the model pulled?) and `/api/show` (how
//! long a context the model takes).
//!
//! Ollama's defaults suit a chat UI, not a batch job, so every chat request overrides
//! them: `stream:false` (the default streams NDJSON), `truncate:false` (the default drops
//! the start of an overflowing prompt without a word), temperature 0 and a fixed seed
//! (the same facts give the same words), and a `num_ctx` sized to the prompt (the default
//! of 4096 tokens is too small for a busy day's facts).

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::config::OllamaSettings;

/// Smallest context requested: Ollama's own default, so a small prompt never gets less.
const MIN_CONTEXT_TOKENS: u32 = 4096;

/// Characters per token assumed when sizing the context. Real tokenizers average closer
/// to 4 on English and about 3 on JSON; the lower figure leaves headroom.
const CHARS_PER_TOKEN: usize = 3;

/// Sampling temperature of every request: the narration restates facts, it does not invent.
pub const TEMPERATURE: f64 = 0.0;

#[derive(Debug, thiserror::Error)]
pub enum OllamaError {
    #[error("invalid Ollama settings: {0}")]
    Settings(String),
    #[error("cannot reach Ollama: {0}")]
    Connect(String),
    #[error("Ollama did not answer within {0} ms")]
    Timeout(u64),
    #[error("model {model} is not available in Ollama (pull it first): {message}")]
    ModelNotFound { model: String, message: String },
    #[error("Ollama is overloaded (503): {0}")]
    Overloaded(String),
    #[error("Ollama answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("Ollama's answer could not be decoded: {0}")]
    Malformed(String),
    #[error("the model stopped early (done_reason {0})")]
    DoneReason(String),
}

impl OllamaError {
    /// Whether the model's output, not the server, was at fault: the same request may
    /// well succeed when asked again. Every other error is the server's or the setup's.
    pub fn is_bad_output(&self) -> bool {
        matches!(self, Self::Malformed(_) | Self::DoneReason(_))
    }

    /// A short, closed-set name of the error, for span attributes (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Settings(_) => "settings",
            Self::Connect(_) => "connect",
            Self::Timeout(_) => "timeout",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::Overloaded(_) => "overloaded",
            Self::Http { .. } => "http",
            Self::Malformed(_) => "malformed",
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
}

/// One chat call. The client adds the model, the options and the overrides above.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// JSON Schema the answer must follow (Ollama's structured output), if any.
    pub format: Option<Value>,
    /// Most tokens the answer may take (`num_predict`); also reserved in `num_ctx`.
    pub max_output_tokens: u32,
}

/// What the analyzer needs from an answer. Counts and durations are absent when Ollama
/// leaves them out (e.g. a prompt served from its cache has no `prompt_eval_count`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub model: String,
    pub content: String,
    pub done_reason: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
    pub total_duration: Option<Duration>,
}

/// The `options` of a chat request, exposed so a caller can report what was asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatOptions {
    pub temperature: f64,
    pub seed: i64,
    pub num_ctx: u32,
    pub num_predict: u32,
}

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'a Value>,
    options: ChatOptions,
    keep_alive: &'a str,
    truncate: bool,
}

#[derive(Deserialize)]
struct ChatAnswer {
    model: String,
    message: Message,
    done: bool,
    done_reason: Option<String>,
    prompt_eval_count: Option<u32>,
    eval_count: Option<u32>,
    total_duration: Option<u64>,
}

#[derive(Deserialize)]
struct TagsAnswer {
    models: Vec<TagsModel>,
}

#[derive(Deserialize)]
struct TagsModel {
    name: String,
}

#[derive(Deserialize)]
struct ShowAnswer {
    #[serde(default)]
    model_info: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

#[derive(Debug)]
pub struct OllamaClient {
    http: reqwest::Client,
    base: String,
    model: String,
    keep_alive: String,
    seed: i64,
    timeout_ms: u64,
    max_context_tokens: u32,
    /// The model's context length from `/api/show`, asked once: it changes only when
    /// the model is re-pulled, and asking before every chat would double the calls.
    model_context: OnceCell<Option<u32>>,
}

impl OllamaClient {
    pub fn new(settings: &OllamaSettings) -> Result<Self, OllamaError> {
        let base = settings.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(OllamaError::Settings(format!(
                "ollama.url must be an http(s) URL, got {:?}",
                settings.url
            )));
        }
        if settings.model.trim().is_empty() {
            return Err(OllamaError::Settings("ollama.model is empty".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()
            .map_err(|err| OllamaError::Settings(err.to_string()))?;
        Ok(Self {
            http,
            base,
            model: settings.model.clone(),
            keep_alive: settings.keep_alive.clone(),
            seed: settings.seed,
            timeout_ms: settings.timeout_ms,
            max_context_tokens: settings.max_context_tokens.max(MIN_CONTEXT_TOKENS),
            model_context: OnceCell::new(),
        })
    }

    /// The model every request asks for.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The sampling seed every request is sent with.
    pub fn seed(&self) -> i64 {
        self.seed
    }

    /// The options a request is sent with, given the model's context length if known.
    pub fn options_for(&self, request: &ChatRequest, model_context: Option<u32>) -> ChatOptions {
        let prompt_chars = request.messages.iter().map(|m| m.content.len()).sum();
        ChatOptions {
            temperature: TEMPERATURE,
            seed: self.seed,
            num_ctx: context_tokens(
                prompt_chars,
                request.max_output_tokens,
                self.max_context_tokens,
                model_context,
            ),
            num_predict: request.max_output_tokens,
        }
    }

    /// One non-streamed chat call. An answer that stopped for any reason but `stop`
    /// (e.g. `length`: it hit `num_predict`) is an error: its JSON is cut off.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, OllamaError> {
        let model_context = self.model_context().await?;
        let body = self.chat_body(request, model_context);
        let answer: ChatAnswer = self.post("/api/chat", &body).await?;
        if !answer.done {
            return Err(OllamaError::DoneReason("not done".into()));
        }
        if let Some(reason) = answer.done_reason.as_deref().filter(|r| *r != "stop") {
            return Err(OllamaError::DoneReason(reason.to_owned()));
        }
        Ok(ChatResponse {
            model: answer.model,
            content: answer.message.content,
            done_reason: answer.done_reason,
            prompt_tokens: answer.prompt_eval_count,
            output_tokens: answer.eval_count,
            total_duration: answer.total_duration.map(Duration::from_nanos),
        })
    }

    fn chat_body<'a>(
        &'a self,
        request: &'a ChatRequest,
        model_context: Option<u32>,
    ) -> ChatBody<'a> {
        ChatBody {
            model: &self.model,
            messages: &request.messages,
            stream: false,
            format: request.format.as_ref(),
            options: self.options_for(request, model_context),
            keep_alive: &self.keep_alive,
            truncate: false,
        }
    }

    /// Whether the model is pulled. A bare name matches its `:latest` tag, as in Ollama.
    pub async fn has_model(&self) -> Result<bool, OllamaError> {
        let response = self.send(self.http.get(self.url("/api/tags"))).await?;
        let tags: TagsAnswer = self.decode(response).await?;
        Ok(tags.models.iter().any(|m| same_model(&m.name, &self.model)))
    }

    /// The model's context length from `/api/show`, if its `model_info` states one.
    pub async fn context_length(&self) -> Result<Option<u32>, OllamaError> {
        let show: ShowAnswer = self
            .post("/api/show", &serde_json::json!({ "model": self.model }))
            .await?;
        Ok(show
            .model_info
            .iter()
            .find(|(key, _)| key.ends_with(".context_length"))
            .and_then(|(_, value)| value.as_u64())
            .map(|tokens| u32::try_from(tokens).unwrap_or(u32::MAX)))
    }

    /// The cached context length. Transport errors and a missing model end the chat
    /// here (the chat would fail the same way); any other failure of `/api/show` only
    /// means the length is unknown, and is not cached so a later call asks again.
    async fn model_context(&self) -> Result<Option<u32>, OllamaError> {
        if let Some(known) = self.model_context.get() {
            return Ok(*known);
        }
        match self.context_length().await {
            Ok(length) => Ok(*self.model_context.get_or_init(|| async { length }).await),
            Err(
                err @ (OllamaError::Connect(_)
                | OllamaError::Timeout(_)
                | OllamaError::ModelNotFound { .. }),
            ) => Err(err),
            Err(err) => {
                tracing::debug!(error = %err, "context length unknown; using ollama.max_context_tokens");
                Ok(None)
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, OllamaError> {
        let response = self.send(self.http.post(self.url(path)).json(body)).await?;
        self.decode(response).await
    }

    /// Reads the whole body, then decodes it, so a body that is not the expected JSON
    /// is `Malformed` while a body cut off by the timeout is still `Timeout`.
    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, OllamaError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.transport_error(&err))?;
        serde_json::from_slice(&bytes).map_err(|err| OllamaError::Malformed(err.to_string()))
    }

    /// Sends and maps HTTP errors to their kinds, reading Ollama's `{"error": …}` body.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OllamaError> {
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
        let message = serde_json::from_str::<ErrorAnswer>(&text)
            .map(|answer| answer.error)
            .unwrap_or(text);
        Err(match status {
            StatusCode::NOT_FOUND => OllamaError::ModelNotFound {
                model: self.model.clone(),
                message,
            },
            StatusCode::SERVICE_UNAVAILABLE => OllamaError::Overloaded(message),
            _ => OllamaError::Http {
                status: status.as_u16(),
                message,
            },
        })
    }

    /// A connect timeout is `Connect` (nothing listens); any other timeout is the
    /// whole-request one.
    fn transport_error(&self, err: &reqwest::Error) -> OllamaError {
        if err.is_timeout() && !err.is_connect() {
            OllamaError::Timeout(self.timeout_ms)
        } else {
            OllamaError::Connect(error_chain(err))
        }
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

fn same_model(listed: &str, wanted: &str) -> bool {
    listed == wanted || (!wanted.contains(':') && listed == format!("{wanted}:latest"))
}

/// `num_ctx` for a prompt: its estimated tokens plus the answer's, rounded up to a
/// power of two (fewer distinct sizes, so Ollama reloads the model less often), at
/// least 4096, at most the configured cap and the model's own length.
pub fn context_tokens(
    prompt_chars: usize,
    answer_tokens: u32,
    cap: u32,
    model_context: Option<u32>,
) -> u32 {
    let prompt_tokens = u32::try_from(prompt_chars.div_ceil(CHARS_PER_TOKEN)).unwrap_or(u32::MAX);
    let wanted = prompt_tokens
        .saturating_add(answer_tokens)
        .checked_next_power_of_two()
        .unwrap_or(u32::MAX)
        .max(MIN_CONTEXT_TOKENS);
    let cap = model_context.map_or(cap, |model| cap.min(model));
    wanted.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_a_power_of_two_at_least_the_default() {
        assert_eq!(context_tokens(300, 1024, 32_768, None), 4096);
        assert_eq!(context_tokens(3 * 5000, 1024, 32_768, None), 8192);
        assert_eq!(context_tokens(3 * 7200, 1024, 32_768, None), 16_384);
    }

    #[test]
    fn context_is_capped_by_settings_and_model() {
        assert_eq!(context_tokens(3 * 100_000, 1024, 32_768, None), 32_768);
        assert_eq!(context_tokens(3 * 100_000, 1024, 32_768, Some(8192)), 8192);
        assert_eq!(context_tokens(usize::MAX, u32::MAX, 32_768, None), 32_768);
    }

    #[test]
    fn bare_model_names_match_latest() {
        assert!(same_model("llama3.1:8b", "llama3.1:8b"));
        assert!(same_model("mistral:latest", "mistral"));
        assert!(!same_model("llama3.1:70b", "llama3.1:8b"));
    }

    #[test]
    fn settings_are_checked() {
        let settings = OllamaSettings {
            url: "localhost:11434".into(),
            ..OllamaSettings::default()
        };
        assert!(matches!(
            OllamaClient::new(&settings),
            Err(OllamaError::Settings(_))
        ));
    }

    #[test]
    fn chat_body_overrides_ollamas_defaults() {
        let client = OllamaClient::new(&OllamaSettings::default()).expect("default settings");
        let request = ChatRequest {
            messages: vec![Message::user("hello")],
            format: Some(serde_json::json!({"type": "object"})),
            max_output_tokens: 512,
        };
        let json = serde_json::to_value(client.chat_body(&request, None)).expect("serializable");
        assert_eq!(json["stream"], false);
        assert_eq!(json["truncate"], false);
        assert_eq!(json["options"]["temperature"], 0.0);
        assert_eq!(json["options"]["seed"], 42);
        assert_eq!(json["options"]["num_ctx"], 4096);
        assert_eq!(json["options"]["num_predict"], 512);
        assert_eq!(json["messages"][0]["role"], "user");
    }
}
