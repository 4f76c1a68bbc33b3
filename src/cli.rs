//! The `lead-lab` command line: argument parsing, dispatch, and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::analyze::jobs::{Analyzer, yesterday};
use crate::analyze::records::{RunStatus, Trigger};
use crate::config::{self, ConfigError, Settings};
use crate::http::analyses::RunWithSummary;
use crate::http::{Application, ServeError};
use crate::simulate::{Mode as SimulateMode, SimulateOptions};
use crate::store::{
    self,
    migrate::{MigrateError, MigrationState, Migrator, SchemaTarget},
};
use crate::telemetry::Telemetry;
use tracing::instrument::WithSubscriber as _;

mod render;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  unexpected failure
  2  invalid command line
  3  invalid configuration
  4  ClickHouse unreachable or refused the credentials
  5  a schema migration failed or an applied migration was changed
  6  the service cannot listen on its address (port taken?)
  7  an analysis failed (no report: the facts could not be read)
  8  lead-lab eval --check: a scenario missed a detector target";

#[derive(Debug, Parser)]
#[command(
    name = "lead-lab",
    version,
    about = "Observability-first lead submission service and lab",
    long_about = "Lead sources post leads to `lead-lab serve`; every attempt becomes OpenTelemetry \
traces and metrics that an OTel collector writes into ClickHouse, where dashboards and the daily \
analyzer read them.\n\n`scripts/run` starts everything on one machine (local ClickHouse + collector, the \
service, simulated traffic); `scripts/stack up` starts only the stack and applies the schema \
with `lead-lab migrate`.",
    after_long_help = after_help(),
)]
pub struct Cli {
    /// TOML settings file; env vars override what it says (see the list below).
    #[arg(
        long,
        short,
        global = true,
        env = "LEADLAB_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the ClickHouse schema (versioned SQL under clickhouse/migrations).
    ///
    /// Creates the database, the OTel tables the collectors write to, the lead_submissions
    /// table with its materialized view, and the analyzer's tables. Safe to re-run: applied
    /// versions are recorded in <database>.schema_migrations and skipped.
    Migrate {
        /// Only show which migrations are applied and which are pending.
        #[arg(long, env = "LEADLAB_MIGRATE_DRY_RUN")]
        dry_run: bool,
    },
    /// Run the lead submission service (HTTP API, telemetry export).
    ///
    /// Listens on http.listen; every submission attempt becomes a `lead.submit` span and
    /// metric points exported to the OTel collector at otel.endpoint. SIGTERM or Ctrl-C
    /// stops accepting, lets in-flight requests finish and flushes telemetry.
    Serve {
        /// Listen address; overrides http.listen.
        #[arg(long, env = "LEADLAB_HTTP_LISTEN", value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Send realistic lead traffic with injected incidents through the real ingest path.
    ///
    /// Live (`--live`) at the scenario's daily curve, or a backfill of past days
    /// (`--backfill 7d`, `--from/--to`) whose events keep their simulated times. The same
    /// scenario and seed send the same requests. Prints a summary; writes it and the
    /// ground truth of the injected incidents as JSON when asked.
    Simulate(SimulateArgs),
    /// Analyse one day now, in this process, and print its report.
    ///
    /// Computes the day's facts from lead_submissions, runs the detectors, asks the model
    /// (llm.url, Ollama or OpenAI-compatible) to narrate and checks the narration against the facts; without a
    /// model the report comes from templates, marked generator = rules. The run and the
    /// report are stored like the service's (analysis_run_states, ai_summaries).
    Analyze {
        /// The calendar day (YYYY-MM-DD) in analyzer.time_zone; default yesterday.
        #[arg(long, env = "LEADLAB_ANALYZE_DAY")]
        day: Option<chrono::NaiveDate>,
        /// Print the run and report as JSON instead of text.
        #[arg(long, env = "LEADLAB_ANALYZE_JSON")]
        json: bool,
    },
    /// Measure what the model writes, day by day, without storing anything.
    ///
    /// For every day from --from to --to: the day's facts and findings as an analysis
    /// computes them, one narration by the configured model (llm.*), and per day whether
    /// the first answer was schema-valid, retries, fallbacks, grounding violations per
    /// field, findings mentioned vs omitted, what was left out of the prompt, tokens in and
    /// out (the server's counts) and latency. Point llm.* at llama3.1:8b to measure it.
    EvalNarration {
        /// First day (YYYY-MM-DD, analyzer.time_zone).
        #[arg(long, env = "LEADLAB_EVAL_FROM")]
        from: chrono::NaiveDate,
        /// Last day, inclusive (default: --from).
        #[arg(long, env = "LEADLAB_EVAL_TO")]
        to: Option<chrono::NaiveDate>,
        /// Print the figures as JSON instead of a table.
        #[arg(long, env = "LEADLAB_EVAL_JSON")]
        json: bool,
    },
    /// Score the detectors on labelled scenarios: recall, precision, fragments, windows.
    ///
    /// Backfills each scenario (its `[eval]` days, ending yesterday) through a service
    /// started here, the collector and ClickHouse; copies its rows into a scratch
    /// database (created and migrated, dropped after unless --keep); computes facts and
    /// findings (no model) for every analysed day, and matches them to the injected
    /// incidents. Prints per scenario recall, precision (findings no incident explains),
    /// findings per incident and window error. Uses the configured sources and keys
    /// (the shipped scenarios use config/local.toml's). The service's own warnings (one
    /// per failed attempt) go to stderr: LEADLAB_LOG_LEVEL=error quiets them.
    /// docs/analyzer.md#evaluation.
    Eval(EvalArgs),
    /// Print the SHA-256 of an API key, the form `[[sources.keys]] sha256` takes.
    HashKey {
        /// The key to hash (read from the environment to keep it out of shell history).
        #[arg(env = "LEADLAB_KEY_TO_HASH", hide_env_values = true)]
        key: String,
    },
    /// Print the effective settings (defaults + file + env) as TOML, secrets redacted.
    Config,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["backfill", "from", "live"])))]
pub struct SimulateArgs {
    /// Scenario file (TOML; docs/simulator.md).
    #[arg(
        long,
        env = "LEADLAB_SIM_SCENARIO",
        default_value = "scenarios/default.toml"
    )]
    scenario: PathBuf,
    /// Backfill the N days before today, e.g. `7d` or `7`.
    #[arg(long, env = "LEADLAB_SIM_BACKFILL", value_name = "DAYS", value_parser = parse_days)]
    backfill: Option<u32>,
    /// Backfill from this day (YYYY-MM-DD, scenario time zone)...
    #[arg(long, env = "LEADLAB_SIM_FROM", requires = "to")]
    from: Option<chrono::NaiveDate>,
    /// ...to this day, inclusive.
    #[arg(long, env = "LEADLAB_SIM_TO", requires = "from")]
    to: Option<chrono::NaiveDate>,
    /// Send from now on, in real time (see --speed, --duration).
    #[arg(long, env = "LEADLAB_SIM_LIVE")]
    live: bool,
    /// Live: how many times faster than the daily curve.
    #[arg(long, env = "LEADLAB_SIM_SPEED", default_value_t = 1.0)]
    speed: f64,
    /// Live: stop after this long, e.g. `30s`, `10m`, `2h` (default: until Ctrl-C).
    #[arg(long, env = "LEADLAB_SIM_DURATION", value_parser = parse_duration)]
    duration: Option<std::time::Duration>,
    /// Seed of the random stream: same scenario + seed = same requests.
    #[arg(long, env = "LEADLAB_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// Base URL of the lead-lab service.
    #[arg(
        long,
        env = "LEADLAB_SIM_TARGET",
        default_value = "http://127.0.0.1:8080"
    )]
    target: String,
    /// Write the summary (attempts per day, source, outcome, reason) as JSON here.
    #[arg(long, env = "LEADLAB_SIM_SUMMARY", value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Write the injected incidents (ground truth for the analyzer) as JSON here.
    #[arg(long, env = "LEADLAB_SIM_GROUND_TRUTH", value_name = "FILE")]
    ground_truth: Option<PathBuf>,
    /// Host the fake CRM on this address for the run (point delivery.url at it).
    #[arg(long, env = "LEADLAB_SIM_CRM_LISTEN", value_name = "ADDR")]
    crm_listen: Option<String>,
    /// How long the fake CRM takes to answer during crm_slow incidents.
    #[arg(long, env = "LEADLAB_SIM_CRM_SLOW_MS", default_value_t = 5_000)]
    crm_slow_ms: u64,
    /// No progress bar.
    #[arg(long, env = "LEADLAB_SIM_QUIET")]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Scenario files (TOML; docs/simulator.md), scored one after the other.
    #[arg(
        long,
        env = "LEADLAB_EVAL_SCENARIOS",
        value_delimiter = ',',
        num_args = 1..,
        required = true,
        value_name = "FILE"
    )]
    scenario: Vec<PathBuf>,
    /// Seed of the simulator's random stream.
    #[arg(long, env = "LEADLAB_EVAL_SEED", default_value_t = 1)]
    seed: u64,
    /// Print the figures as JSON instead of a table.
    #[arg(long, env = "LEADLAB_EVAL_SCORE_JSON")]
    json: bool,
    /// Exit with 8 when a target is missed: recall 100 %, at most one finding per
    /// incident, window error within 15 minutes, no High finding no incident explains.
    #[arg(long, env = "LEADLAB_EVAL_CHECK")]
    check: bool,
    /// Keep the scratch databases (their names are printed).
    #[arg(long, env = "LEADLAB_EVAL_KEEP")]
    keep: bool,
    /// No progress output.
    #[arg(long, env = "LEADLAB_EVAL_QUIET")]
    quiet: bool,
}

fn parse_days(text: &str) -> Result<u32, String> {
    let days = text.strip_suffix('d').unwrap_or(text);
    days.parse::<u32>()
        .ok()
        .filter(|d| (1..=3650).contains(d))
        .ok_or_else(|| format!("`{text}` is not a number of days like 7d"))
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 10m, 2h"))?;
    let seconds = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{text}`: use s, m or h")),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

fn after_help() -> String {
    format!("{}\n{EXIT_CODES}", config::schema::help_text())
}

/// Parses the command line, runs it, and maps failures to documented exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code_for(&err))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    crate::telemetry::init_logging(&settings.log);
    match cli.command {
        Command::Config => {
            print!("{}", settings.to_redacted_toml());
            Ok(())
        }
        Command::Migrate { dry_run } => runtime()?.block_on(migrate(&settings, dry_run)),
        Command::Serve { listen } => {
            let mut settings = settings;
            if let Some(listen) = listen {
                settings.http.listen = listen;
            }
            runtime()?.block_on(serve(settings))
        }
        Command::Analyze { day, json } => runtime()?.block_on(analyze(&settings, day, json)),
        Command::Simulate(args) => runtime()?.block_on(simulate(&settings, args)),
        Command::EvalNarration { from, to, json } => {
            runtime()?.block_on(eval_narration(&settings, from, to.unwrap_or(from), json))
        }
        Command::Eval(args) => runtime()?.block_on(eval(&settings, args)),
        Command::HashKey { key } => {
            println!("{}", crate::ingest::hash_key(&key));
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn migrate(settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
    let client = store::server_client(&settings.clickhouse);
    let target = SchemaTarget::from_settings(settings)?;
    let database = target.database.clone();
    let migrator = Migrator::new(&client, target);
    if dry_run {
        for (migration, state) in migrator.status().await? {
            let state = match state {
                MigrationState::Applied => "applied",
                MigrationState::Pending => "pending",
            };
            println!("{:04}_{:<20} {state}", migration.version, migration.name);
        }
        return Ok(());
    }
    let report = migrator.run().await?;
    for migration in &report.applied {
        println!("applied {:04}_{}", migration.version, migration.name);
    }
    println!(
        "schema of database `{database}` at {} is up to date: {} applied now, {} already applied",
        settings.clickhouse.url,
        report.applied.len(),
        report.already_applied
    );
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    tracing::info!(address = %app.address(), "lead-lab serving; API docs at /docs");
    app.run_until(shutdown_signal()).await?;
    tracing::info!("stopped; telemetry flushed");
    Ok(())
}

async fn analyze(
    settings: &Settings,
    day: Option<chrono::NaiveDate>,
    json: bool,
) -> anyhow::Result<()> {
    let telemetry = Telemetry::init(&settings.otel, &settings.log)?;
    let analyzer = Analyzer::new(settings, telemetry.dispatch())?;
    let day = day.unwrap_or_else(|| yesterday(analyzer.time_zone(), chrono::Utc::now()));
    let finished = analyzer.run_now(day, Trigger::Manual).await;
    let summary = match &finished {
        Ok(run) => analyzer.records().summary_of_run(run.run_id).await?,
        Err(_) => None,
    };
    telemetry.shutdown().await;
    let run = finished?;
    let failed = run.status() == RunStatus::Failed;
    let view = RunWithSummary {
        run: run.into(),
        summary: summary.map(Into::into),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", render::text(&view));
    }
    if failed {
        return Err(AnalysisFailed(view.run.error).into());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("the analysis failed: {0}")]
struct AnalysisFailed(String);

async fn eval_narration(
    settings: &Settings,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    json: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(to >= from, "--to must not be before --from");
    let telemetry = Telemetry::init(&settings.otel, &settings.log)?;
    let client = crate::analyze::llm::LlmClient::new(&settings.llm)?;
    let days = crate::analyze::eval::evaluate(settings, &client, from, to)
        .with_subscriber(telemetry.dispatch())
        .await;
    telemetry.shutdown().await;
    let days = days?;
    if json {
        println!("{}", serde_json::to_string_pretty(&days)?);
    } else {
        println!(
            "model {} at {} ({} API)",
            settings.llm.model,
            settings.llm.url,
            settings.llm.provider.as_str()
        );
        print!("{}", crate::analyze::eval::render(&days));
    }
    Ok(())
}

async fn eval(settings: &Settings, args: EvalArgs) -> anyhow::Result<()> {
    let options = crate::evaluate::EvalOptions {
        scenarios: args.scenario,
        seed: args.seed,
        keep: args.keep,
        show_progress: !args.quiet,
    };
    let results = crate::evaluate::evaluate(settings, &options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", crate::evaluate::render::table(&results));
    }
    let missed: usize = results.iter().map(|r| r.score.misses().len()).sum();
    if args.check && missed > 0 {
        return Err(TargetsMissed(missed).into());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("{0} detector target(s) missed")]
struct TargetsMissed(usize);

async fn simulate(settings: &Settings, args: SimulateArgs) -> anyhow::Result<()> {
    let mode = simulate_mode(&args)?;
    let options = SimulateOptions {
        scenario: args.scenario,
        mode,
        seed: args.seed,
        target: args.target,
        crm_listen: args.crm_listen,
        crm_slow: std::time::Duration::from_millis(args.crm_slow_ms),
        show_progress: !args.quiet,
    };
    let mut otel = settings.otel.clone();
    otel.service_name = format!("{}-simulator", otel.service_name);
    let telemetry = Telemetry::init(&otel, &settings.log)?;
    let report = tokio::select! {
        report = crate::simulate::run(&options, telemetry.tracer()) => report,
        _ = shutdown_signal() => {
            telemetry.shutdown().await;
            anyhow::bail!("interrupted");
        }
    };
    telemetry.shutdown().await;
    let report = report?;
    print!("{}", report.summary.render());
    if let Some(received) = report.crm_received {
        println!("fake CRM received {received} deliveries");
    }
    write_json(args.summary_json.as_deref(), &report.summary)?;
    write_json(args.ground_truth.as_deref(), &report.ground_truth)?;
    Ok(())
}

fn simulate_mode(args: &SimulateArgs) -> anyhow::Result<SimulateMode> {
    if args.live {
        return Ok(SimulateMode::Live {
            speed: args.speed,
            duration: args.duration,
        });
    }
    if let (Some(from), Some(to)) = (args.from, args.to) {
        let days = u32::try_from((to - from).num_days() + 1)
            .ok()
            .filter(|d| *d > 0);
        let days = days.ok_or_else(|| anyhow::anyhow!("--to must not be before --from"))?;
        return Ok(SimulateMode::Backfill {
            first_day: from,
            days,
        });
    }
    let scenario = crate::simulate::scenario::Scenario::load(&args.scenario)?;
    let zone = scenario.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC);
    let (first_day, days) = crate::simulate::last_days(zone, args.backfill.unwrap_or(7));
    Ok(SimulateMode::Backfill { first_day, days })
}

fn write_json<T: serde::Serialize>(
    path: Option<&std::path::Path>,
    value: &T,
) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Resolves on SIGTERM (service managers) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<ConfigError>().is_some() {
        return 3;
    }
    if let Some(ServeError::Bind { .. }) = err.downcast_ref::<ServeError>() {
        return 6;
    }
    if err.downcast_ref::<AnalysisFailed>().is_some() {
        return 7;
    }
    if err.downcast_ref::<TargetsMissed>().is_some() {
        return 8;
    }
    match err.downcast_ref::<MigrateError>() {
        Some(MigrateError::Bookkeeping(_)) => 4,
        Some(MigrateError::Identifier(_)) => 3,
        Some(_) => 5,
        None => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_can_be_set_from_the_environment() {
        fn check(cmd: &clap::Command) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                assert!(
                    builtin || arg.get_env().is_some(),
                    "flag --{} of `{}` has no env var",
                    arg.get_id(),
                    cmd.get_name()
                );
            }
            cmd.get_subcommands().for_each(check);
        }
        check(&Cli::command());
    }

    #[test]
    fn help_lists_settings_and_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("LEADLAB_CLICKHOUSE_URL"));
        assert!(help.contains("Exit codes:"));
    }

    #[test]
    fn configuration_errors_exit_with_3() {
        let err = anyhow::Error::from(ConfigError::MissingFile("x.toml".into()));
        assert_eq!(exit_code_for(&err), 3);
    }
}
