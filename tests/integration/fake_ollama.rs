//! A scripted Ollama on 127.0.0.1:0 for tests of the analyzer: `/api/chat` answers from a
//! script, one reply per call; `/api/tags` and `/api/show` answer for the served model
//! (or 404 when it serves none, as an Ollama without the model pulled would). Every
//! request body is recorded, so tests can check what was sent (options, schema, and
//! that no personal data left the process).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lead_lab::config::LlmSettings;
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener};
use poem::web::{Data, Json};
use poem::{EndpointExt, IntoResponse, Request, Response, Route, get, handler, post};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The model served unless a test says otherwise.
pub const MODEL: &str = "llama3.1:8b";

/// What `/api/chat` answers to one call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete answer whose message content is this JSON, serialized.
    GoodJson(Value),
    /// A complete answer whose content is this text: not JSON, or not the schema.
    Malformed(String),
    /// An answer cut off at `num_predict` (`done_reason: "length"`) with this content.
    Truncated(String),
    /// This HTTP status with Ollama's `{"error": …}` body.
    Status(u16, String),
    /// A 200 whose body is this text rather than Ollama's JSON.
    RawBody(String),
    /// The reply, after a pause (longer than a client's timeout to simulate a hung model).
    Slow(Duration, Box<Reply>),
}

impl Reply {
    pub fn slow(pause: Duration, reply: Reply) -> Self {
        Self::Slow(pause, Box::new(reply))
    }
}

/// What the fake serves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The pulled model; `None` answers 404 "not found" to chat and show, and lists none.
    pub model: Option<String>,
    /// The `context_length` `/api/show` reports.
    pub context_length: u32,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            model: Some(MODEL.to_owned()),
            context_length: 131_072,
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// The body as JSON (a body that is not JSON is recorded as a JSON string).
    pub body: Value,
}

struct State {
    options: FakeOptions,
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
}

pub struct FakeOllama {
    pub url: String,
    state: Arc<State>,
    serving: JoinHandle<()>,
}

impl FakeOllama {
    /// Serves [`MODEL`] and answers chat calls with `script`, in order; calls beyond
    /// the script get a 500 saying so.
    pub async fn start(script: Vec<Reply>) -> Self {
        Self::start_with(FakeOptions::default(), script).await
    }

    pub async fn start_with(options: FakeOptions, script: Vec<Reply>) -> Self {
        let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind 127.0.0.1:0");
        let addr = *acceptor.local_addr()[0]
            .as_socket_addr()
            .expect("a TCP address");
        let state = Arc::new(State {
            options,
            script: Mutex::new(script.into()),
            requests: Mutex::new(Vec::new()),
        });
        let app = Route::new()
            .at("/api/chat", post(chat))
            .at("/api/tags", get(tags))
            .at("/api/show", post(show))
            .data(state.clone());
        let serving = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self {
            url: format!("http://{addr}"),
            state,
            serving,
        }
    }

    /// Settings pointing at the fake, with short timeouts.
    pub fn settings(&self) -> LlmSettings {
        LlmSettings {
            url: self.url.clone(),
            model: MODEL.to_owned(),
            connect_timeout_ms: 1_000,
            timeout_ms: 5_000,
            ..LlmSettings::default()
        }
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("not poisoned").clone()
    }

    /// The bodies of the `/api/chat` requests received, in order.
    pub fn chat_requests(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/api/chat")
            .map(|r| r.body)
            .collect()
    }
}

impl Drop for FakeOllama {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

impl State {
    fn record(&self, path: &str, body: &str) -> Value {
        let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
        self.requests.lock().expect("not poisoned").push(Recorded {
            path: path.to_owned(),
            body: body.clone(),
        });
        body
    }

    /// Whether the request asks for the served model.
    fn serves(&self, body: &Value) -> bool {
        self.options.model.is_some() && body["model"].as_str() == self.options.model.as_deref()
    }

    fn next_reply(&self) -> Reply {
        self.script
            .lock()
            .expect("not poisoned")
            .pop_front()
            .unwrap_or_else(|| Reply::Status(500, "fake ollama: script exhausted".into()))
    }
}

fn error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Json(json!({ "error": message }))
        .with_status(status)
        .into_response()
}

fn not_found(body: &Value) -> Response {
    let model = body["model"].as_str().unwrap_or_default();
    error(
        404,
        &format!("model \"{model}\" not found, try pulling it first"),
    )
}

#[handler]
async fn chat(req: &Request, body: String, state: Data<&Arc<State>>) -> Response {
    let body = state.record(req.uri().path(), &body);
    if !state.serves(&body) {
        return not_found(&body);
    }
    let mut reply = state.next_reply();
    while let Reply::Slow(pause, inner) = reply {
        tokio::time::sleep(pause).await;
        reply = *inner;
    }
    match reply {
        Reply::GoodJson(value) => answer(&body, &value.to_string(), "stop"),
        Reply::Malformed(text) => answer(&body, &text, "stop"),
        Reply::Truncated(text) => answer(&body, &text, "length"),
        Reply::Status(status, message) => error(status, &message),
        Reply::RawBody(text) => text.into_response(),
        Reply::Slow(..) => unreachable!("unwrapped above"),
    }
}

/// A non-streamed `/api/chat` answer, with token counts of about 4 characters a token.
fn answer(request: &Value, content: &str, done_reason: &str) -> Response {
    let prompt_chars: usize = request["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter_map(|m| m["content"].as_str())
                .map(str::len)
                .sum()
        })
        .unwrap_or_default();
    Json(json!({
        "model": request["model"],
        "created_at": "2024-05-02T01:15:00.000000Z",
        "message": {"role": "assistant", "content": content},
        "done": true,
        "done_reason": done_reason,
        "total_duration": 1_500_000_000u64,
        "load_duration": 100_000_000u64,
        "prompt_eval_count": prompt_chars.div_ceil(4),
        "prompt_eval_duration": 400_000_000u64,
        "eval_count": content.len().div_ceil(4),
        "eval_duration": 1_000_000_000u64,
    }))
    .into_response()
}

#[handler]
async fn tags(req: &Request, state: Data<&Arc<State>>) -> Json<Value> {
    state.record(req.uri().path(), "null");
    let models: Vec<Value> = state
        .options
        .model
        .iter()
        .map(|name| json!({"name": name, "model": name, "size": 4_920_753_328u64}))
        .collect();
    Json(json!({ "models": models }))
}

#[handler]
async fn show(req: &Request, body: String, state: Data<&Arc<State>>) -> Response {
    let body = state.record(req.uri().path(), &body);
    if !state.serves(&body) {
        return not_found(&body);
    }
    Json(json!({
        "details": {"family": "llama", "parameter_size": "8.0B"},
        "model_info": {
            "general.architecture": "llama",
            "llama.context_length": state.options.context_length,
        },
    }))
    .into_response()
}
