//! The `leadhook` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leadhook::config::{Config, LogConfig, LogFormat};

#[derive(Parser)]
#[command(
    name = "leadhook",
    version,
    about = "Turns PostgreSQL lead changes into save_lead webhooks, at-least-once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: stream changes of the leads table and deliver them.
    Run(ConfigArg),
    /// Validate the config and the database prerequisites, and print what was found.
    Check(ConfigArg),
    /// Start a throwaway Postgres, a receiver and the pipeline, and show a few deliveries.
    Demo {
        /// Stay up after the deliveries (status page, receiver, database) until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
    },
    /// Print (or --apply) the SQL the configured mode needs; --uninstall removes it.
    Setup {
        /// Run the SQL instead of printing it.
        #[arg(long, conflicts_with = "uninstall")]
        apply: bool,
        /// Remove what setup installs (notify: trigger and outbox; replication: slot and publication).
        #[arg(long)]
        uninstall: bool,
        /// Also set REPLICA IDENTITY FULL on the table (and its partitions), so
        /// large unchanged values come with each change, exact (costs WAL on UPDATE and DELETE).
        #[arg(long, conflicts_with = "uninstall")]
        replica_identity_full: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List or replay the changes webhooks gave up on.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Work with the configured webhooks.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Deliver existing leads as save_lead, through the running sidecar;
    /// follows the run (a progress bar on a terminal). See `backfill status`.
    Backfill(BackfillCli),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BackfillCli {
    #[command(subcommand)]
    command: Option<BackfillCommand>,
    /// Only this webhook (repeat for more); every webhook when left out.
    #[arg(long = "webhook", value_name = "NAME")]
    webhooks: Vec<String>,
    /// Only the leads this SQL condition holds for, e.g. "updated_at > now() - interval '1 day'".
    #[arg(long = "where", value_name = "SQL")]
    where_sql: Option<String>,
    /// Leads per batch (each batch is recorded once every webhook handled it).
    #[arg(long, value_name = "N")]
    batch: Option<i32>,
    /// At most this many leads per second, e.g. 200 or 200/s.
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    rate: Option<i32>,
    /// File the run and return at once instead of following it.
    #[arg(long)]
    detach: bool,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Subcommand)]
enum BackfillCommand {
    /// Every backfill run (or RUN): state, leads done of total, reason.
    Status {
        run: Option<i64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Stop run RUN after the batch in hand.
    Cancel {
        run: i64,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// `200` or `200/s`.
fn parse_rate(text: &str) -> Result<i32, String> {
    let number = text.strip_suffix("/s").unwrap_or(text);
    match number.trim().parse::<i32>() {
        Ok(rate) if rate > 0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate: write leads per second, e.g. 200/s"
        )),
    }
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Every webhook (file and registry table): enabled or paused, state,
    /// last success and failure, in flight, spooled, dead letters.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Send one sample save_lead (webhook-id test_…) to webhook NAME, enabled
    /// or not, and print the answer; exits 0 on a 2xx.
    Test {
        /// The webhook's `name` in the config or the registry table.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Hold webhook NAME's changes in the spool (durably) until it is resumed.
    Pause {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Deliver what waited for webhook NAME, in order, and go on live.
    Resume {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Print the dead letters as a table.
    List {
        /// Only this webhook's.
        #[arg(long)]
        webhook: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Deliver dead letters again, with their original webhook-id; each is
    /// removed only once its webhook answered 2xx.
    Replay {
        /// Only this webhook's.
        #[arg(long)]
        webhook: Option<String>,
        /// Only the letter with this webhook-id.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Path of the config file.
    #[arg(long, env = "LEADHOOK_CONFIG", default_value = "sidecar.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: leadhook is I/O-bound and shares its cores with PostgreSQL
    // and the receivers. Measured with leadhook-bench on 2 cores, the
    // multi-threaded runtime spent more on cross-thread wake-ups and malloc
    // lock contention than it gained: 39k vs 49k events/s, and 3.2 vs 1.9
    // CPU-seconds per 100k events (README, "Performance").
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run(arg) => run(arg).await,
            Command::Check(arg) => check(arg).await,
            Command::Demo { keep_running } => demo(keep_running).await,
            Command::DeadLetters(command) => dead_letters(command).await,
            Command::Webhooks(command) => webhooks(command).await,
            Command::Backfill(command) => backfill(command).await,
            Command::Setup {
                apply,
                uninstall,
                replica_identity_full,
                config,
            } => setup(apply, uninstall, replica_identity_full, config).await,
        }
    })
}

/// Loads the config and starts logging as it says.
fn load(arg: &ConfigArg) -> Result<Config, ExitCode> {
    let config = Config::load(&arg.config).map_err(|e| {
        eprintln!("error: invalid configuration ({}):", arg.config.display());
        for problem in e.problems() {
            eprintln!("  {problem}");
        }
        ExitCode::from(2)
    })?;
    init_logging(&config.log).map_err(|problem| {
        eprintln!(
            "error: invalid configuration ({}):\n  {problem}",
            arg.config.display()
        );
        ExitCode::from(2)
    })?;
    Ok(config)
}

async fn run(arg: ConfigArg) -> ExitCode {
    let config = match load(&arg) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match leadhook::sidecar::run(config, Some(arg.config.clone()), shutdown_signal(), None).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn check(arg: ConfigArg) -> ExitCode {
    let config = match load(&arg) {
        Ok(config) => config,
        Err(code) => return code,
    };
    println!("ok       config {}", arg.config.display());
    match leadhook::check::check(&config, &mut std::io::stdout()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn setup(
    apply: bool,
    uninstall: bool,
    replica_identity_full: bool,
    arg: ConfigArg,
) -> ExitCode {
    use leadhook::setup::{SetupAction, SetupOptions};
    let config = match load(&arg) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let action = match (apply, uninstall) {
        (_, true) => SetupAction::Uninstall,
        (true, false) => SetupAction::Apply,
        (false, false) => SetupAction::Print,
    };
    let options = SetupOptions {
        action,
        replica_identity_full,
    };
    match leadhook::setup::setup(&config, options, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dead_letters(command: DeadLettersCommand) -> ExitCode {
    let mut out = std::io::stdout();
    let (arg, result) = match command {
        DeadLettersCommand::List { webhook, config } => {
            let result = match load(&config) {
                Ok(loaded) => leadhook::dead_letter::list(&loaded, webhook.as_deref(), &mut out)
                    .await
                    .map(|_| true)
                    .map_err(|e| e.to_string()),
                Err(code) => return code,
            };
            (config, result)
        }
        DeadLettersCommand::Replay {
            webhook,
            id,
            config,
        } => {
            let result = match load(&config) {
                Ok(loaded) => {
                    leadhook::registry::replay(&loaded, webhook.as_deref(), id.as_deref(), &mut out)
                        .await
                        .map(|report| report.failed == 0 && report.skipped == 0)
                        .map_err(|e| e.to_string())
                }
                Err(code) => return code,
            };
            (config, result)
        }
    };
    exit_code(result, &arg)
}

async fn webhooks(command: WebhooksCommand) -> ExitCode {
    use leadhook::registry;
    let mut out = std::io::stdout();
    let (arg, loaded) = match &command {
        WebhooksCommand::List { config, .. }
        | WebhooksCommand::Test { config, .. }
        | WebhooksCommand::Pause { config, .. }
        | WebhooksCommand::Resume { config, .. } => (config, load(config)),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result = match &command {
        WebhooksCommand::List { json, .. } => registry::list(&config, *json, &mut out)
            .await
            .map(|()| true)
            .map_err(|e| e.to_string()),
        WebhooksCommand::Test { name, .. } => registry::test(&config, name, &mut out)
            .await
            .map_err(|e| e.to_string()),
        WebhooksCommand::Pause { name, .. } | WebhooksCommand::Resume { name, .. } => {
            let paused = matches!(command, WebhooksCommand::Pause { .. });
            registry::pause(&config, name, paused, &mut out)
                .await
                .map(|()| true)
                .map_err(|e| e.to_string())
        }
    };
    exit_code(result, arg)
}

async fn backfill(cli: BackfillCli) -> ExitCode {
    use leadhook::backfill;
    let mut out = std::io::stdout();
    let arg = match &cli.command {
        None => &cli.config,
        Some(BackfillCommand::Status { config, .. } | BackfillCommand::Cancel { config, .. }) => {
            config
        }
    };
    let config = match load(arg) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result = match &cli.command {
        None => {
            let args = backfill::BackfillArgs {
                webhooks: cli.webhooks.clone(),
                where_sql: cli.where_sql.clone(),
                batch: cli.batch,
                rate: cli.rate,
                detach: cli.detach,
            };
            backfill::file_and_follow(&config, &args, &mut out).await
        }
        Some(BackfillCommand::Status { run, json, .. }) => {
            backfill::status(&config, *run, *json, &mut out)
                .await
                .map(|()| true)
        }
        Some(BackfillCommand::Cancel { run, .. }) => backfill::cancel(&config, *run, &mut out)
            .await
            .map(|()| true),
    };
    exit_code(result, arg)
}

/// 0 when the command succeeded, 1 when it found something wrong or failed
/// (the error printed, with the config it ran on).
fn exit_code<E: std::fmt::Display>(result: Result<bool, E>, arg: &ConfigArg) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e} (config {})", arg.config.display());
            ExitCode::FAILURE
        }
    }
}

async fn demo(keep_running: bool) -> ExitCode {
    // The demo prints what matters itself; only warnings would interleave.
    let quiet = LogConfig {
        level: "warn".into(),
        ..LogConfig::default()
    };
    if let Err(problem) = init_logging(&quiet) {
        eprintln!("error: {problem}");
        return ExitCode::from(2);
    }
    #[cfg(feature = "demo")]
    let outcome =
        leadhook::demo::run(&mut std::io::stdout(), keep_running.then(shutdown_signal)).await;
    #[cfg(not(feature = "demo"))]
    let _ = keep_running;
    #[cfg(not(feature = "demo"))]
    let outcome: anyhow::Result<()> = Err(anyhow::anyhow!(
        "this build has no demo (it was built with --no-default-features); \
         run `cargo run --release -- demo` from a clone of the repository"
    ));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stop requested: finishing deliveries in flight");
}

/// Logs on stderr, human-readable or JSON lines; the level is `RUST_LOG`
/// when set, else `log.level`.
fn init_logging(log: &LogConfig) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(level) => EnvFilter::try_new(&level).map_err(|e| format!("RUST_LOG={level:?}: {e}"))?,
        Err(_) => EnvFilter::try_new(&log.level)
            .map_err(|e| format!("log.level: {:?} is not a log filter ({e})", log.level))?,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    Ok(())
}

/// mimalloc, for the hot path (see README, "What profiling found"), built
/// without transparent huge pages (`no_thp`): with them, large rows freed
/// and allocated again kept whole 2 MiB pages resident, and RSS went past
/// the memory budget by half.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
