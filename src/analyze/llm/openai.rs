//! The OpenAI-compatible dialect: `/v1/chat/completions` (one non-streamed answer, the
//! schema as `response_format` `json_schema`) and `/v1/models` (is the model served,
//! and, where the server says, its context length). Spoken by llama.cpp's llama-server,
//! vLLM, LM Studio and Ollama's own `/v1`.
//!
//! Such servers answer for whatever model they have loaded, whatever name a request
//! gives, so the name is checked against `/v1/models` first: the record then never names
//! a model that did not answer.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ChatRequest, ChatResponse, LlmClient, LlmError, Message, ModelInfo, TEMPERATURE};

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    temperature: f64,
    seed: i64,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
}

#[derive(Deserialize)]
struct ChatAnswer {
    model: String,
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct ModelsAnswer {
    data: Vec<Value>,
}

fn chat_body<'a>(client: &'a LlmClient, request: &'a ChatRequest) -> ChatBody<'a> {
    ChatBody {
        model: &client.model,
        messages: &request.messages,
        stream: false,
        temperature: TEMPERATURE,
        seed: client.seed,
        max_tokens: request.max_output_tokens,
        response_format: request.format.as_ref().map(|schema| {
            json!({
                "type": "json_schema",
                "json_schema": {"name": "report", "strict": true, "schema": schema},
            })
        }),
    }
}

pub(super) async fn chat(
    client: &LlmClient,
    request: &ChatRequest,
) -> Result<ChatResponse, LlmError> {
    let answer: ChatAnswer = client
        .post("/v1/chat/completions", &chat_body(client, request))
        .await?;
    let Some(choice) = answer.choices.into_iter().next() else {
        return Err(LlmError::Malformed {
            server: client.server(),
            message: "the answer has no choices".into(),
        });
    };
    let usage = answer.usage;
    Ok(ChatResponse {
        model: answer.model,
        content: choice.message.content.unwrap_or_default(),
        done_reason: Some(choice.finish_reason.unwrap_or_else(|| "unknown".into())),
        prompt_tokens: usage.as_ref().and_then(|u| u.prompt_tokens),
        output_tokens: usage.as_ref().and_then(|u| u.completion_tokens),
    })
}

/// The model's entry of `/v1/models`; a model the server does not list is not found.
pub(super) async fn model_info(client: &LlmClient) -> Result<ModelInfo, LlmError> {
    let response = client.send(client.get("/v1/models")).await?;
    let models: ModelsAnswer = client.decode(response).await?;
    let ids: Vec<&str> = models
        .data
        .iter()
        .filter_map(|entry| entry["id"].as_str())
        .collect();
    let Some(entry) = models.data.iter().find(|entry| {
        entry["id"]
            .as_str()
            .is_some_and(|id| same_model(id, &client.model))
    }) else {
        return Err(client.not_found(format!("the server lists {}", ids.join(", "))));
    };
    Ok(ModelInfo {
        context_length: context_length(entry),
    })
}

/// Where the servers put it: llama.cpp `meta.n_ctx` (the context it allocated), vLLM
/// `max_model_len`, others `context_length` or `max_context_length`.
fn context_length(entry: &Value) -> Option<u32> {
    [
        &entry["meta"]["n_ctx"],
        &entry["max_model_len"],
        &entry["context_length"],
        &entry["max_context_length"],
    ]
    .into_iter()
    .find_map(Value::as_u64)
    .map(|tokens| u32::try_from(tokens).unwrap_or(u32::MAX))
}

/// Ollama's `/v1` lists `name:latest` for a bare name.
fn same_model(listed: &str, wanted: &str) -> bool {
    listed == wanted || (!wanted.contains(':') && listed == format!("{wanted}:latest"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LlmProvider, LlmSettings};

    #[test]
    fn context_lengths_are_read_where_each_server_puts_them() {
        assert_eq!(
            context_length(&json!({"meta": {"n_ctx": 8192, "n_ctx_train": 8192}})),
            Some(8192)
        );
        assert_eq!(
            context_length(&json!({"max_model_len": 32768})),
            Some(32768)
        );
        assert_eq!(context_length(&json!({"context_length": 4096})), Some(4096));
        assert_eq!(context_length(&json!({"id": "x"})), None);
    }

    #[test]
    fn the_schema_goes_as_a_json_schema_response_format() {
        let settings = LlmSettings {
            provider: LlmProvider::Openai,
            ..LlmSettings::default()
        };
        let client = LlmClient::new(&settings).expect("valid");
        let request = ChatRequest {
            messages: vec![Message::user("hello")],
            format: Some(json!({"type": "object"})),
            max_output_tokens: 512,
        };
        let body = serde_json::to_value(chat_body(&client, &request)).expect("json");
        assert_eq!(body["stream"], false);
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["seed"], 42);
        assert_eq!(body["max_tokens"], 512);
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(
            body["response_format"]["json_schema"]["schema"],
            json!({"type": "object"})
        );
    }
}
