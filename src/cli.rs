//! The `lead-lab` command line: argument parsing, dispatch, and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{self, ConfigError, Settings};
use crate::http::{Application, ServeError};
use crate::store::{
    self,
    migrate::{MigrateError, MigrationState, Migrator, SchemaTarget},
};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  unexpected failure
  2  invalid command line
  3  invalid configuration
  4  ClickHouse unreachable or refused the credentials
  5  a schema migration failed or an applied migration was changed
  6  the service cannot listen on its address (port taken?)";

#[derive(Debug, Parser)]
#[command(
    name = "lead-lab",
    version,
    about = "Observability-first lead submission service and lab",
    long_about = "Lead sources post leads to `lead-lab serve`; every attempt becomes OpenTelemetry \
traces and metrics that an OTel collector writes into ClickHouse, where dashboards and the daily \
analyzer read them.\n\nStart the local stack (ClickHouse + collector, no Docker) with \
`scripts/stack up`; it applies the schema with `lead-lab migrate` for you.",
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
    /// Print the SHA-256 of an API key, the form `[[sources.keys]] sha256` takes.
    HashKey {
        /// The key to hash (read from the environment to keep it out of shell history).
        #[arg(env = "LEADLAB_KEY_TO_HASH", hide_env_values = true)]
        key: String,
    },
    /// Print the effective settings (defaults + file + env) as TOML, secrets redacted.
    Config,
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
