//! The analyzer against a real model: the dev model server (llm/local/server.py,
//! SmolLM2-135M on one thread) that scripts/test starts with the stack, through both of
//! its APIs. A simulator-backfilled day is narrated and stored; the words are checked to
//! repeat with the same facts and seed, the prompt to fit the context, and a missing
//! model or server to end degraded. Few narrations (a 135M model on a busy CPU takes
//! tens of seconds each), all in one test so they share one backfill and never queue
//! behind each other for the server's single slot.

use std::sync::Arc;

use chrono::NaiveDate;
use lead_lab::analyze::facts::{self, DayFacts, FactsQuery};
use lead_lab::analyze::jobs::Analyzer;
use lead_lab::analyze::llm::LlmClient;
use lead_lab::analyze::narrate::{Narration, NarrationInput, narrate};
use lead_lab::analyze::prompt::{self, PromptInput};
use lead_lab::analyze::records::{RunRow, RunStatus, SummaryRow, Trigger};
use lead_lab::analyze::report::Generator;
use lead_lab::analyze::{detect, grounding};
use lead_lab::config::{LlmProvider, LlmSettings, Settings};

use crate::app::TestApp;
use crate::simulate::{replayed, shipped};
use crate::support::free_port;

/// The name the dev model server serves its model under.
const DEV_MODEL: &str = "smollm2:135m";

/// The window the tests size prompts to: half the model's 8192 tokens, so the prompt
/// must be compacted and every call stays short.
const WINDOW: u32 = 4096;

/// Where scripts/test started the dev model server (its URLs in these variables).
struct DevModel {
    ollama: String,
    openai: String,
}

impl DevModel {
    /// The server, after checking both APIs answer: these tests never pass by not
    /// talking to the model.
    async fn require() -> Self {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        let model = Self {
            ollama: var("LEADLAB_TEST_MODEL_OLLAMA_URL", "http://127.0.0.1:11434"),
            openai: var("LEADLAB_TEST_MODEL_OPENAI_URL", "http://127.0.0.1:11435"),
        };
        for url in [
            format!("{}/api/version", model.ollama),
            format!("{}/v1/models", model.openai),
        ] {
            let answer = reqwest::get(&url).await.and_then(|r| r.error_for_status());
            if let Err(err) = answer {
                panic!(
                    "the dev model server does not answer at {url} ({err}); start it with \
                     `scripts/stack up --with-model` (scripts/test does this for you)"
                );
            }
        }
        model
    }

    fn settings(&self, provider: LlmProvider) -> LlmSettings {
        LlmSettings {
            provider,
            url: match provider {
                LlmProvider::Ollama => self.ollama.clone(),
                LlmProvider::Openai => self.openai.clone(),
            },
            model: DEV_MODEL.into(),
            timeout_ms: 600_000,
            max_context_tokens: WINDOW,
            ..LlmSettings::default()
        }
    }
}

/// The app's settings with the analyzer pointed at `llm`, one attempt per run.
fn analyzer(app: &TestApp, llm: LlmSettings) -> Arc<Analyzer> {
    let mut settings: Settings = app.settings.clone();
    settings.llm = llm;
    settings.analyzer.max_attempts = 1;
    settings.analyzer.schedule_enabled = false;
    Analyzer::new(&settings, tracing::dispatcher::get_default(Clone::clone))
        .expect("valid analyzer settings")
}

async fn analyse(analyzer: &Arc<Analyzer>, day: NaiveDate) -> (RunRow, SummaryRow) {
    let run = analyzer
        .run_now(day, Trigger::Manual)
        .await
        .expect("the run ends");
    let summary = analyzer
        .records()
        .summary_of_run(run.run_id)
        .await
        .expect("records readable")
        .expect("a stored report");
    (run, summary)
}

/// A stored report the model wrote: the model that answered, real token counts.
fn assert_model_report(provider: &str, run: &RunRow, summary: &SummaryRow) {
    assert_eq!(
        run.status(),
        RunStatus::Succeeded,
        "{provider}: {}",
        run.error
    );
    assert_eq!(summary.generator, "model", "{provider}");
    assert_eq!(run.model, DEV_MODEL, "{provider}: the model that answered");
    assert_eq!(summary.model, DEV_MODEL, "{provider}");
    assert!(run.prompt_tokens > 100, "{provider}: {}", run.prompt_tokens);
    assert!(run.output_tokens > 10, "{provider}: {}", run.output_tokens);
    assert!(!summary.executive_summary.trim().is_empty());
}

async fn day_input(app: &TestApp, day: NaiveDate) -> (DayFacts, Vec<lead_lab::analyze::Finding>) {
    let query = FactsQuery {
        day,
        time_zone: chrono_tz::Tz::UTC,
        baseline_days: 7,
        service: Some(app.service.clone()),
        burst_per_minute: app.settings.detectors.burst_per_minute,
    };
    let day_facts = facts::compute(&app.stack.client(), &query, chrono::Utc::now())
        .await
        .expect("facts compute");
    let findings = detect::detect(&day_facts, &app.settings.detectors);
    (day_facts, findings)
}

async fn narrate_directly(
    llm: &LlmSettings,
    day: NaiveDate,
    facts: &DayFacts,
    findings: &[lead_lab::analyze::Finding],
) -> Narration {
    let client = LlmClient::new(llm).expect("valid settings");
    let input = NarrationInput {
        day,
        time_zone: "UTC",
        facts,
        findings,
    };
    narrate(&client, input).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_simulated_day_is_narrated_by_the_real_model_through_both_apis() {
    let model = DevModel::require().await;
    let first = chrono::Utc::now().date_naive() - chrono::Duration::days(3);
    let (app, _) = replayed(&shipped("quiet.toml"), first, 2, 1).await;
    let day = first + chrono::Duration::days(1);

    // Through each API, the analyzer's whole path: stored as the model's report.
    let openai = model.settings(LlmProvider::Openai);
    let (run, summary) = analyse(&analyzer(&app, openai.clone()), day).await;
    assert_model_report("openai", &run, &summary);
    let ollama = model.settings(LlmProvider::Ollama);
    let (run, stored) = analyse(&analyzer(&app, ollama.clone()), day).await;
    assert_model_report("ollama", &run, &stored);

    // Through Ollama's API, sized to a window smaller than the model's context: the
    // server refuses a prompt over num_ctx, so an answer at all shows it fit; the
    // server's own counts show by how much.
    let (facts, findings) = day_input(&app, day).await;
    let first_words = narrate_directly(&ollama, day, &facts, &findings).await;
    assert_eq!(
        first_words.generator,
        Generator::Model,
        "{:?}",
        first_words.error
    );
    assert_eq!(first_words.model, DEV_MODEL);
    assert_eq!(first_words.context_window, WINDOW);
    let per_call = first_words.prompt_tokens / first_words.calls.max(1);
    assert!(
        per_call + WINDOW / 4 <= WINDOW,
        "prompt of {per_call} tokens and an answer of {} do not fit {WINDOW}",
        WINDOW / 4
    );
    assert!(
        !first_words.left_out.is_empty(),
        "a busy day's facts do not fit {WINDOW} tokens whole"
    );
    assert!(
        first_words
            .report
            .scope
            .not_analysed
            .iter()
            .any(|item| item.starts_with("left out of the model's prompt")),
        "{:?}",
        first_words.report.scope.not_analysed
    );
    // The grounding check ran on the real text, against what the model was shown (the
    // facts compacted to the window, not the whole day): its verdict is the check's own.
    let client = LlmClient::new(&ollama).expect("valid settings");
    let day_text = day.format("%Y-%m-%d").to_string();
    let facts = serde_json::to_value(&facts).expect("facts serialise");
    let input = PromptInput {
        day: &day_text,
        time_zone: "UTC",
        facts: &facts,
        findings: &findings,
    };
    let window = WINDOW as usize;
    let output = client.output_tokens(WINDOW) as usize;
    let shown = prompt::build_within(input, window, output)
        .expect("the day's prompt fits the window, as the narration's did")
        .shown;
    let mut written = first_words.report.clone();
    written.scope.not_analysed.pop();
    let rechecked = grounding::check(&written, &shown.facts, &shown.findings);
    for violation in &first_words.violations {
        assert!(rechecked.contains(violation), "{violation}");
    }

    // The same facts and seed give the same words: the stored run's and this one's.
    let words = &first_words.report;
    assert_eq!(stored.executive_summary, words.executive_summary);
    assert_eq!(stored.user_behavior, words.user_behavior);
    assert_eq!(stored.system_behavior, words.system_behavior);
    assert_eq!(run.output_tokens, first_words.output_tokens);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_model_or_no_server_ends_degraded_with_the_rules_report() {
    let model = DevModel::require().await;
    let day = chrono::Utc::now().date_naive() - chrono::Duration::days(2);
    let (app, _) = replayed(&shipped("quiet.toml"), day, 1, 2).await;

    let down = LlmSettings {
        url: format!("http://127.0.0.1:{}", free_port()),
        ..model.settings(LlmProvider::Ollama)
    };
    let cases = [
        (
            LlmProvider::Ollama,
            "llama3.1:8b",
            "model llama3.1:8b is not available in Ollama (pull it first)",
        ),
        (
            LlmProvider::Openai,
            "llama3.1:8b",
            "is not available in the OpenAI-compatible server",
        ),
    ];
    for (provider, name, why) in cases {
        let llm = LlmSettings {
            model: name.into(),
            ..model.settings(provider)
        };
        let (run, summary) = analyse(&analyzer(&app, llm), day).await;
        assert_eq!(run.status(), RunStatus::Degraded, "{provider:?}");
        assert!(run.error.contains(why), "{provider:?}: {}", run.error);
        assert_eq!(summary.generator, "rules");
        assert_eq!((run.prompt_tokens, run.output_tokens), (0, 0));
    }
    let (run, summary) = analyse(&analyzer(&app, down), day).await;
    assert_eq!(run.status(), RunStatus::Degraded);
    assert!(run.error.contains("cannot reach Ollama"), "{}", run.error);
    assert_eq!(summary.generator, "rules");
}
