//! Ollama's dialect: `/api/chat` (one non-streamed answer), `/api/tags` (is the model
//! pulled?) and `/api/show` (how long a context the model takes).
//!
//! Ollama's defaults suit a chat UI, not a batch job, so every chat request overrides
//! them: `stream:false` (the default streams NDJSON), `truncate:false` (the default drops
//! the start of an overflowing prompt without a word), temperature 0 and a fixed seed
//! (the same facts give the same words), and a `num_ctx` sized to the prompt (the default
//! of 4096 tokens is too small for a busy day's facts).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatRequest, ChatResponse, LlmClient, LlmError, Message, ModelInfo, TEMPERATURE};

/// The `options` of a chat request.
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

fn chat_body<'a>(client: &'a LlmClient, request: &'a ChatRequest, window: u32) -> ChatBody<'a> {
    ChatBody {
        model: &client.model,
        messages: &request.messages,
        stream: false,
        format: request.format.as_ref(),
        options: ChatOptions {
            temperature: TEMPERATURE,
            seed: client.seed,
            num_ctx: super::context_tokens(
                request.estimated_prompt_tokens(),
                request.max_output_tokens,
                window,
            ),
            num_predict: request.max_output_tokens,
        },
        keep_alive: &client.keep_alive,
        truncate: false,
    }
}

pub(super) async fn chat(
    client: &LlmClient,
    request: &ChatRequest,
    window: u32,
) -> Result<ChatResponse, LlmError> {
    let body = chat_body(client, request, window);
    let answer: ChatAnswer = client.post("/api/chat", &body).await?;
    let done_reason = if answer.done {
        answer.done_reason
    } else {
        Some("not done".into())
    };
    Ok(ChatResponse {
        model: answer.model,
        content: answer.message.content,
        done_reason,
        prompt_tokens: answer.prompt_eval_count,
        output_tokens: answer.eval_count,
    })
}

pub(super) async fn has_model(client: &LlmClient) -> Result<bool, LlmError> {
    let response = client.send(client.get("/api/tags")).await?;
    let tags: TagsAnswer = client.decode(response).await?;
    Ok(tags
        .models
        .iter()
        .any(|m| same_model(&m.name, &client.model)))
}

/// The model's context length from `/api/show`, if its `model_info` states one.
pub(super) async fn model_info(client: &LlmClient) -> Result<ModelInfo, LlmError> {
    let show: ShowAnswer = client
        .post("/api/show", &serde_json::json!({ "model": client.model }))
        .await?;
    let context_length = show
        .model_info
        .iter()
        .find(|(key, _)| key.ends_with(".context_length"))
        .and_then(|(_, value)| value.as_u64())
        .map(|tokens| u32::try_from(tokens).unwrap_or(u32::MAX));
    Ok(ModelInfo { context_length })
}

fn same_model(listed: &str, wanted: &str) -> bool {
    listed == wanted || (!wanted.contains(':') && listed == format!("{wanted}:latest"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LlmSettings;

    #[test]
    fn bare_model_names_match_latest() {
        assert!(same_model("llama3.1:8b", "llama3.1:8b"));
        assert!(same_model("mistral:latest", "mistral"));
        assert!(!same_model("llama3.1:70b", "llama3.1:8b"));
    }

    #[test]
    fn chat_body_overrides_ollamas_defaults() {
        let client = LlmClient::new(&LlmSettings::default()).expect("default settings");
        let request = ChatRequest {
            messages: vec![Message::user("hello")],
            format: Some(serde_json::json!({"type": "object"})),
            max_output_tokens: 512,
        };
        let json = serde_json::to_value(chat_body(&client, &request, 32_768)).expect("json");
        assert_eq!(json["stream"], false);
        assert_eq!(json["truncate"], false);
        assert_eq!(json["options"]["temperature"], 0.0);
        assert_eq!(json["options"]["seed"], 42);
        assert_eq!(json["options"]["num_ctx"], 4096);
        assert_eq!(json["options"]["num_predict"], 512);
        assert_eq!(json["messages"][0]["role"], "user");
    }
}
