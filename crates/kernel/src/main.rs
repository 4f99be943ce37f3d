//! The `trovato` command: `serve`, `migrate`, `user ...`, `plugin ...`,
//! `files ...`, `cron ...`.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use trovato::kernel::Role;
use trovato::{Config, Kernel};

/// Request handling makes many small, short-lived allocations; mimalloc
/// serves them markedly cheaper than the system allocator (see
/// `bench/cache.sh`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "trovato",
    version,
    about = "The Trovato content management kernel",
    after_help = "Every setting is a flag, an environment variable and a key of the \
                  --config file; precedence: flag, environment, file, default. \
                  `trovato serve --help` lists them."
)]
struct Cli {
    /// TOML config file (unknown tables and keys are an error).
    #[arg(long, global = true, env = "TROVATO_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Parses the command line: the commands above, and every setting of
/// [`Config`] as a global flag.
fn parse() -> anyhow::Result<(Cli, Config)> {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let file = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let config = file.layer(&matches)?;
    Ok((cli, config))
}

/// What a command's help says of the settings it does not list.
const SETTINGS_POINTER: &str = "Settings: every setting is a flag of every command, an environment \
     variable and a --config key (precedence: flag, environment, file, default); \
     `trovato serve --help` lists them.";

/// The command line: [`Cli`] with every setting as a flag of every
/// command. Only `trovato serve --help` lists the settings; every other
/// command's help shows its own arguments and points there.
fn command() -> clap::Command {
    Config::command_listing(Cli::command(), |name| name == "serve").mut_subcommands(|sc| {
        if sc.get_name() == "serve" {
            sc
        } else {
            point_to_settings(sc)
        }
    })
}

fn point_to_settings(cmd: clap::Command) -> clap::Command {
    cmd.after_help(SETTINGS_POINTER)
        .mut_subcommands(point_to_settings)
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server until SIGINT/SIGTERM.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the configuration the other commands would run with, as TOML
    /// (passwords in URLs replaced), and exit.
    Config,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect, enable, disable and try plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Maintain managed files.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Run one cron pass and exit (0 when it ran or another server holds
    /// the lock), or show the last passes.
    Cron(CronArgs),
    /// Work, inspect and repair the job queues.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Start batch operations and follow their progress.
    #[command(subcommand)]
    Batch(BatchCommand),
}

#[derive(Subcommand)]
enum BatchCommand {
    /// Start OPERATION (see `trovato batch operations`) and print its id;
    /// with --follow, then show its progress.
    Start {
        /// The operation, e.g. `items.publish`.
        operation: String,
        /// Its parameters as JSON, e.g. '{"type": "article"}' [default: {}].
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
        /// Start it as this user [default: none, as the system].
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Follow its progress until it ends.
        #[arg(long)]
        follow: bool,
        /// With --follow: cancel the batch on Ctrl-C (it keeps running otherwise).
        #[arg(long, requires = "follow")]
        cancel_on_exit: bool,
    },
    /// Show a batch's progress: a bar on a terminal, plain lines otherwise.
    Status {
        /// The batch's id.
        id: String,
        /// Follow it until it ends.
        #[arg(long)]
        follow: bool,
        /// With --follow: cancel the batch on Ctrl-C (it keeps running otherwise).
        #[arg(long, requires = "follow")]
        cancel_on_exit: bool,
    },
    /// Cancel a batch: chunks not yet begun are skipped.
    Cancel {
        /// The batch's id.
        id: String,
    },
    /// Enqueue again the chunks of a batch not yet done (safe to repeat).
    Resume {
        /// The batch's id.
        id: String,
    },
    /// The operations a batch can run, with their parameters.
    Operations,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Work the declared queues until SIGTERM/SIGINT, then stop taking
    /// jobs, let those in hand finish within the shutdown grace period and
    /// give back the rest.
    Work {
        /// Only these queues (repeatable) [default: every declared queue].
        #[arg(long = "queue", value_name = "NAME")]
        queues: Vec<String>,
        /// Jobs worked at once [default: the sum of the queues' declared concurrency].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        concurrency: Option<u16>,
    },
    /// Every queue with its counts: ready, delayed, in flight, dead, and
    /// the wait of the oldest ready item.
    List,
    /// Move the dead items of a queue back, with fresh attempts.
    RetryDead {
        /// Queue name.
        name: String,
    },
    /// Delete every item of a queue, dead or alive.
    Purge {
        /// Queue name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct CronArgs {
    #[command(subcommand)]
    command: Option<CronCommand>,
}

#[derive(Subcommand)]
enum CronCommand {
    /// Show the last cron passes: when, where, how long, and each step.
    Status {
        /// How many passes to show.
        #[arg(long, default_value_t = 10)]
        last: u32,
    },
}

#[derive(Subcommand)]
enum FilesCommand {
    /// One cleanup pass (what cron runs): remove temporary uploads older
    /// than `files.temporary_max_age_secs` and finish deleting released
    /// files; prints what it did.
    Cleanup,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List the plugins in the plugin directory with their status.
    List,
    /// Enable a plugin (stored in the database; running servers apply it
    /// within 5 seconds).
    Enable {
        /// Plugin name.
        name: String,
    },
    /// Disable a plugin.
    Disable {
        /// Plugin name.
        name: String,
    },
    /// Load one plugin (enabled or not; no database needed), call one tap
    /// under the server's bounds and print its output JSON.
    Invoke {
        /// Plugin name.
        name: String,
        /// The tap's export name, e.g. `tap_cron`.
        tap: String,
        /// Input JSON, or `-` to read it from standard input [default: {}].
        #[arg(long, value_name = "JSON")]
        input: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from stdin or generated and
    /// printed once.
    Create {
        /// User name (unique, case-insensitive).
        name: String,
        /// Email address (unique, case-insensitive).
        #[arg(long)]
        email: String,
        /// Grant the administrator role.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create an API bearer token for a user and print it (shown once).
    Token {
        /// User name.
        name: String,
        /// A label to recognise the token by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List users by name, a page at a time.
    List {
        /// Only users whose name contains this (ignoring case).
        #[arg(long)]
        name: Option<String>,
        /// Only active or only blocked users.
        #[arg(long, value_enum)]
        status: Option<trovato::user::manage::Status>,
        /// Only holders of this role.
        #[arg(long)]
        role: Option<String>,
        /// Page number, from 1.
        #[arg(long, default_value_t = 1)]
        page: u32,
        /// Users per page (at most 200).
        #[arg(long, default_value_t = 50)]
        per_page: u32,
    },
    /// Show a user: id, email, status, roles, API tokens.
    Show {
        /// User name.
        name: String,
    },
    /// Block a user: their sessions end and their API tokens are revoked.
    Block {
        /// User name.
        name: String,
    },
    /// Unblock a user (revoked API tokens stay revoked).
    Unblock {
        /// User name.
        name: String,
    },
    /// Delete a user; their items and revisions go to --reassign-to, or
    /// keep no author.
    Delete {
        /// User name.
        name: String,
        /// The user who becomes the author of their content.
        #[arg(long, value_name = "NAME")]
        reassign_to: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Set a user's password (generated and printed once, or read from
    /// stdin); their sessions end.
    Password {
        /// User name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List a user's API tokens (id, label, created, last used).
    Tokens {
        /// User name.
        name: String,
    },
    /// Revoke one of a user's API tokens.
    RevokeToken {
        /// User name.
        name: String,
        /// The token's id (see `trovato user tokens`).
        id: String,
    },
}

fn main() -> ExitCode {
    let (cli, config) = match parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("trovato: {}", one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trovato: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trovato: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// message already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg.replace('\n', " ")
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    trovato::observe::logging::init(config.observe.log_format);
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let kernel = Kernel::boot_as(config, Role::Command).await?;
            tracing::info!("migrations applied");
            kernel.shutdown().await;
            Ok(())
        }
        Command::Config => {
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::User(cmd) => user(config, cmd).await,
        Command::Plugin(cmd) => plugin(config, cmd).await,
        Command::Files(FilesCommand::Cleanup) => {
            let kernel = Kernel::boot(config).await?;
            let result = trovato::file::usage::cleanup(&kernel.state).await;
            kernel.shutdown().await;
            let report = result?;
            println!(
                "expired {} temporary files, purged {} released files, {} failed",
                report.expired, report.purged, report.failed
            );
            Ok(())
        }
        Command::Cron(args) => cron(config, args.command).await,
        Command::Queue(cmd) => queue(config, cmd).await,
        Command::Batch(cmd) => {
            let kernel = Kernel::boot(config).await?;
            let result = batch_command(&kernel, cmd).await;
            kernel.shutdown().await;
            result
        }
    }
}

fn batch_id(raw: &str) -> anyhow::Result<uuid::Uuid> {
    raw.parse()
        .map_err(|_| anyhow::anyhow!("`{raw}` is not a batch id"))
}

async fn batch_command(kernel: &Kernel, cmd: BatchCommand) -> anyhow::Result<()> {
    use trovato::batch;
    let state = &kernel.state;
    match cmd {
        BatchCommand::Start {
            operation,
            params,
            user,
            follow,
            cancel_on_exit,
        } => {
            let params: serde_json::Value = match params {
                None => serde_json::json!({}),
                Some(p) => serde_json::from_str(&p).context("--params is not JSON")?,
            };
            let owner = match user {
                None => None,
                Some(name) => Some(
                    trovato::user::find_by_name(&state.db, &name)
                        .await?
                        .with_context(|| format!("no user named `{name}`"))?
                        .id,
                ),
            };
            let s = batch::start(state, owner, batch::NewBatch { operation, params }).await?;
            println!("{}", s.id);
            if follow {
                follow_batch(kernel, s.id, cancel_on_exit).await?;
            }
            Ok(())
        }
        BatchCommand::Status {
            id,
            follow,
            cancel_on_exit,
        } => {
            let id = batch_id(&id)?;
            if follow {
                follow_batch(kernel, id, cancel_on_exit).await
            } else {
                println!("{}", status_line(&batch::status(state, id).await?));
                Ok(())
            }
        }
        BatchCommand::Cancel { id } => {
            let s = batch::cancel(state, batch_id(&id)?).await?;
            println!("{}", status_line(&s));
            Ok(())
        }
        BatchCommand::Resume { id } => {
            let n = batch::resume(state, batch_id(&id)?).await?;
            println!("{n} chunks enqueued again");
            Ok(())
        }
        BatchCommand::Operations => {
            for op in batch::ops::all(state).await {
                let i = op.info();
                println!(
                    "{:<28} {}  params: {}  ({})",
                    i.name, i.description, i.params, i.permission
                );
            }
            Ok(())
        }
    }
}

/// One line of a batch's progress, for logs and pipes.
fn status_line(s: &trovato::batch::BatchStatus) -> String {
    let eta = match s.eta_secs {
        Some(e) if !s.state.is_final() => format!(", about {} s left", e.ceil() as u64),
        _ => String::new(),
    };
    format!(
        "{} {} {:.0}% ({} done, {} failed of {}){eta}: {}",
        s.operation,
        s.state.as_str(),
        s.percent.floor(),
        s.processed,
        s.failed,
        s.total,
        s.message
    )
}

/// Shows the batch's progress until it ends: a bar on a terminal, a line
/// per change otherwise. Ctrl-C leaves it running unless `cancel_on_exit`.
async fn follow_batch(kernel: &Kernel, id: uuid::Uuid, cancel_on_exit: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use trovato::batch;
    let state = &kernel.state;
    let tty = std::io::stdout().is_terminal();
    let bar = tty.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} ({percent}%) {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last = String::new();
    // Registered before the first line is printed, so an interrupt never
    // finds the default action (exit) in place.
    let mut interrupted = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    loop {
        let s = batch::status(state, id).await?;
        if let Some(bar) = &bar {
            bar.set_length(s.total);
            bar.set_position(s.processed + s.failed);
            bar.set_message(format!("{}: {}", s.state.as_str(), s.message));
        } else {
            let line = status_line(&s);
            if line != last {
                println!("{line}");
                last = line;
            }
        }
        if s.state.is_final() {
            if let Some(bar) = &bar {
                bar.finish();
                println!("{}", status_line(&s));
            }
            return Ok(());
        }
        tokio::select! {
            _ = interrupted.recv() => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                if cancel_on_exit {
                    let s = batch::cancel(state, id).await?;
                    println!("cancelled: {}", status_line(&s));
                } else {
                    println!("batch {id} keeps running; follow it with `trovato batch status {id} --follow`");
                }
                return Ok(());
            }
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}

async fn queue(config: Config, cmd: QueueCommand) -> anyhow::Result<()> {
    // Ask before booting anything: a refusal changes nothing.
    if let QueueCommand::Purge { name, yes: false } = &cmd {
        trovato::queue::check_name(name)?;
        eprint!("Delete every item of queue {name}, dead or alive? [y/N] ");
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("not purged (confirm with y, or pass --yes)");
        }
    }
    let kernel = Kernel::boot(config).await?;
    let result = queue_command(&kernel, cmd).await;
    kernel.shutdown().await;
    result
}

async fn queue_command(kernel: &Kernel, cmd: QueueCommand) -> anyhow::Result<()> {
    use trovato::queue::Queue;
    use trovato::queue::worker;
    let state = &kernel.state;
    match cmd {
        QueueCommand::Work {
            queues,
            concurrency,
        } => {
            let mut declared = worker::declared(state).await;
            let chosen: Vec<worker::QueueInfo> = if queues.is_empty() {
                declared.into_values().collect()
            } else {
                let mut chosen = Vec::new();
                for name in queues {
                    let q = declared
                        .remove(&name)
                        .with_context(|| format!("no queue named `{name}` is declared"))?;
                    chosen.push(q);
                }
                chosen
            };
            anyhow::ensure!(!chosen.is_empty(), "no queue is declared");
            let concurrency = concurrency
                .map(usize::from)
                .unwrap_or_else(|| chosen.iter().map(|q| q.concurrency).sum());
            let names: Vec<&str> = chosen.iter().map(|q| q.name.as_str()).collect();
            tracing::info!(queues = ?names, concurrency, "working queues");
            let cancel = state.tasks.token();
            let signal = cancel.clone();
            tokio::spawn(async move {
                trovato::app::shutdown_signal().await;
                signal.cancel();
            });
            let limits = worker::RunLimits {
                concurrency,
                until: None,
                until_empty: false,
                grace: state.config.server.shutdown_grace(),
            };
            let report = worker::run(state, chosen, limits, &cancel).await;
            tracing::info!(
                acked = report.acked,
                retried = report.retried,
                dead = report.dead,
                released = report.released,
                "queue worker stopped"
            );
            Ok(())
        }
        QueueCommand::List => {
            let declared = worker::declared(state).await;
            let mut names: std::collections::BTreeSet<String> =
                state.queues.names().await?.into_iter().collect();
            names.extend(declared.keys().cloned());
            println!(
                "{:<32} {:>9} {:>9} {:>9} {:>9} {:>12} WORKER",
                "QUEUE", "READY", "DELAYED", "IN-FLIGHT", "DEAD", "OLDEST-SECS"
            );
            for name in names {
                let s = state.queues.stats(&name).await?;
                let worker = declared
                    .get(&name)
                    .map(|q| format!("{:?}", q.worker))
                    .unwrap_or_else(|| "undeclared".into());
                println!(
                    "{:<32} {:>9} {:>9} {:>9} {:>9} {:>12.1} {worker}",
                    name, s.ready, s.delayed, s.in_flight, s.dead, s.oldest_ready_secs
                );
            }
            Ok(())
        }
        QueueCommand::RetryDead { name } => {
            let n = state.queues.retry_dead(&name).await?;
            println!("{n} dead items of {name} are queued again");
            Ok(())
        }
        QueueCommand::Purge { name, .. } => {
            let n = state.queues.purge(&name).await?;
            println!("purged {n} items of {name}");
            Ok(())
        }
    }
}

async fn cron(config: Config, cmd: Option<CronCommand>) -> anyhow::Result<()> {
    let kernel = Kernel::boot(config).await?;
    let result = match cmd {
        None => cron_pass(&kernel).await,
        Some(CronCommand::Status { last }) => cron_status(&kernel, last).await,
    };
    kernel.shutdown().await;
    result
}

async fn cron_pass(kernel: &Kernel) -> anyhow::Result<()> {
    use trovato::cron::{Pass, StepOutcome, Trigger};
    match trovato::cron::run(&kernel.state, Trigger::Cli).await? {
        Pass::Busy { holder } => println!("cron skipped: another server holds the lock ({holder})"),
        Pass::Ran(run) => {
            let took = run
                .finished
                .map(|f| format!(" in {} ms", (f - run.started).num_milliseconds()))
                .unwrap_or_default();
            let steps: Vec<String> = run
                .steps
                .iter()
                .map(|s| match s.outcome {
                    StepOutcome::Ok => format!("{} ok", s.name),
                    other => format!("{} {}: {}", s.name, other.as_str(), s.detail),
                })
                .collect();
            println!(
                "cron ran on {}{took}: {} ({})",
                run.holder,
                run.outcome.as_str(),
                steps.join("; ")
            );
        }
    }
    Ok(())
}

async fn cron_status(kernel: &Kernel, last: u32) -> anyhow::Result<()> {
    use trovato::cron::StepOutcome;
    let runs = trovato::cron::recent(&kernel.state.db, last).await?;
    if runs.is_empty() {
        println!("no cron pass recorded");
        return Ok(());
    }
    println!(
        "{:<25} {:>9} {:<10} {:<24} STEPS",
        "STARTED", "MS", "OUTCOME", "SERVER"
    );
    for run in runs {
        let ms = run
            .finished
            .map(|f| (f - run.started).num_milliseconds().to_string())
            .unwrap_or_else(|| "-".into());
        let steps: Vec<String> = run
            .steps
            .iter()
            .map(|s| format!("{}={}", s.name, s.outcome.as_str()))
            .collect();
        println!(
            "{:<25} {:>9} {:<10} {:<24} {}",
            run.started.format("%Y-%m-%d %H:%M:%S%.3f"),
            ms,
            run.outcome.as_str(),
            run.holder,
            steps.join(" ")
        );
        for s in run.steps.iter().filter(|s| s.outcome != StepOutcome::Ok) {
            println!("    {}: {}", s.name, s.detail);
        }
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let loops = config.server.http_loops();
    let kernel = Kernel::boot(config).await?;
    let listeners = match trovato::app::bind_loops(listen, loops).await {
        Ok(l) => l,
        Err(e) => {
            kernel.shutdown().await;
            anyhow::bail!("server.listen (TROVATO_LISTEN): cannot bind {listen}: {e}");
        }
    };
    let addr = listeners
        .first()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()
        .context("server.listen (TROVATO_LISTEN)")?
        .unwrap_or(listen);
    tracing::info!(%addr, loops = listeners.len(), "listening");
    trovato::search::feed::spawn_indexer(&kernel.state);
    let state = kernel.state.clone();
    let result = trovato::app::serve_loops(
        listeners,
        state,
        trovato::app::shutdown_signal(),
        kernel.shutdown(),
    )
    .await;
    tracing::info!("stopped");
    result.context("HTTP server")
}

async fn user(config: Config, cmd: UserCommand) -> anyhow::Result<()> {
    // Ask before booting anything: a refusal changes nothing.
    if let UserCommand::Delete {
        name,
        reassign_to,
        yes: false,
    } = &cmd
    {
        let content = match reassign_to {
            Some(heir) => format!("their content goes to {heir}"),
            None => "their content keeps no author".to_owned(),
        };
        eprint!("Delete user {name} ({content})? [y/N] ");
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("not deleted (confirm with y, or pass --yes)");
        }
    }
    let kernel = Kernel::boot_as(config, Role::Command).await?;
    let result = user_command(&kernel, cmd).await;
    kernel.shutdown().await;
    result
}

/// The first line of standard input, for `--password-stdin`.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn find_user(db: &sqlx::PgPool, name: &str) -> anyhow::Result<trovato::user::User> {
    trovato::user::find_by_name(db, name)
        .await?
        .with_context(|| format!("no user named `{name}`"))
}

fn status_name(status: i16) -> &'static str {
    if status == 1 { "active" } else { "blocked" }
}

/// The command line acts as an administrator.
const BY_ADMINISTRATOR: bool = true;

async fn user_command(kernel: &Kernel, cmd: UserCommand) -> anyhow::Result<()> {
    use trovato::user::manage::{self, Status};
    let state = &kernel.state;
    let db = &state.db;
    match cmd {
        UserCommand::Create {
            name,
            email,
            admin,
            password_stdin,
        } => {
            let (password, generated) = if password_stdin {
                (password_from_stdin()?, false)
            } else {
                (trovato::user::password::generate(), true)
            };
            let user = trovato::user::create(
                db,
                trovato::user::NewUser {
                    name: &name,
                    email: &email,
                    password: &password,
                    admin,
                },
            )
            .await?;
            println!("Created user {} ({})", user.name, user.id);
            if generated {
                println!("Password: {password}");
            }
            Ok(())
        }
        UserCommand::Token { name, label } => {
            let user = find_user(db, &name).await?;
            let token = trovato::user::token::create(db, user.id, &label).await?;
            println!("{token}");
            Ok(())
        }
        UserCommand::List {
            name,
            status,
            role,
            page,
            per_page,
        } => {
            let filter = manage::UserFilter {
                name,
                status,
                role,
                page: Some(page),
                per_page: Some(per_page),
            };
            let found = manage::list(db, &filter).await?;
            println!(
                "{:<24} {:<32} {:<8} {:<24} ID",
                "NAME", "EMAIL", "STATUS", "ROLES"
            );
            for u in &found.users {
                println!(
                    "{:<24} {:<32} {:<8} {:<24} {}",
                    u.name,
                    u.email,
                    status_name(u.status),
                    u.roles.join(","),
                    u.id
                );
            }
            let pages = (found.total.max(1) as u64).div_ceil(u64::from(found.per_page));
            println!("page {} of {pages}; {} matching", found.page, found.total);
            Ok(())
        }
        UserCommand::Show { name } => {
            let user = find_user(db, &name).await?;
            let u = manage::summary(db, user.id).await?;
            let tokens = manage::tokens(state, u.id, BY_ADMINISTRATOR).await?;
            println!("name:    {}", u.name);
            println!("id:      {}", u.id);
            println!("email:   {}", u.email);
            println!("status:  {}", status_name(u.status));
            println!("roles:   {}", u.roles.join(", "));
            println!("created: {}", u.created.to_rfc3339());
            println!("changed: {}", u.changed.to_rfc3339());
            println!("tokens:  {}", tokens.len());
            Ok(())
        }
        UserCommand::Block { name } => {
            let user = find_user(db, &name).await?;
            manage::set_status(state, user.id, Status::Blocked, BY_ADMINISTRATOR).await?;
            println!(
                "Blocked user {}: their sessions ended and their API tokens are revoked",
                user.name
            );
            Ok(())
        }
        UserCommand::Unblock { name } => {
            let user = find_user(db, &name).await?;
            manage::set_status(state, user.id, Status::Active, BY_ADMINISTRATOR).await?;
            println!("Unblocked user {}", user.name);
            Ok(())
        }
        UserCommand::Delete {
            name, reassign_to, ..
        } => {
            let user = find_user(db, &name).await?;
            let deleted =
                manage::delete(state, user.id, reassign_to.as_deref(), BY_ADMINISTRATOR).await?;
            let to = deleted
                .heir
                .as_ref()
                .map_or_else(|| "no one".to_owned(), |h| h.name.clone());
            println!(
                "Deleted user {}; the content of {} items went to {to}",
                deleted.user.name, deleted.items
            );
            Ok(())
        }
        UserCommand::Password {
            name,
            password_stdin,
        } => {
            let user = find_user(db, &name).await?;
            let given = if password_stdin {
                Some(password_from_stdin()?)
            } else {
                None
            };
            let reset =
                manage::reset_password(state, user.id, given.as_deref(), BY_ADMINISTRATOR).await?;
            println!("Set the password of {}; their sessions ended", user.name);
            if let Some(password) = reset.password {
                println!("Password: {password}");
            }
            Ok(())
        }
        UserCommand::Tokens { name } => {
            let user = find_user(db, &name).await?;
            let tokens = manage::tokens(state, user.id, BY_ADMINISTRATOR).await?;
            println!("{:<36} {:<25} {:<25} LABEL", "ID", "CREATED", "LAST-USED");
            for t in tokens {
                println!(
                    "{:<36} {:<25} {:<25} {}",
                    t.id,
                    t.created.format("%Y-%m-%d %H:%M:%S"),
                    t.last_used.map_or_else(
                        || "never".to_owned(),
                        |u| u.format("%Y-%m-%d %H:%M:%S").to_string()
                    ),
                    t.label
                );
            }
            Ok(())
        }
        UserCommand::RevokeToken { name, id } => {
            let user = find_user(db, &name).await?;
            let token_id: uuid::Uuid = id
                .parse()
                .map_err(|_| anyhow::anyhow!("`{id}` is not a token id"))?;
            manage::revoke_token(state, user.id, token_id, BY_ADMINISTRATOR).await?;
            println!("Revoked token {token_id} of {}", user.name);
            Ok(())
        }
    }
}

async fn plugin(config: Config, cmd: PluginCommand) -> anyhow::Result<()> {
    if let PluginCommand::Invoke { name, tap, input } = cmd {
        return plugin_invoke(&config, &name, &tap, input).await;
    }
    let kernel = Kernel::boot_as(config, Role::Command).await?;
    let result = plugin_command(&kernel, cmd).await;
    kernel.shutdown().await;
    result
}

async fn plugin_command(kernel: &Kernel, cmd: PluginCommand) -> anyhow::Result<()> {
    let state = &kernel.state;
    match cmd {
        PluginCommand::List => {
            println!(
                "{:<24} {:<10} {:>6} {:<8} {:<9} TAPS",
                "NAME", "VERSION", "WEIGHT", "ENABLED", "STATUS"
            );
            for p in state.plugins.list() {
                println!(
                    "{:<24} {:<10} {:>6} {:<8} {:<9} {}",
                    p.name,
                    p.version,
                    p.weight,
                    if p.enabled { "yes" } else { "no" },
                    p.status,
                    p.taps.join(",")
                );
                if let Some(error) = p.error {
                    println!("    {error}");
                }
            }
            Ok(())
        }
        PluginCommand::Enable { name } => {
            state.plugins.set_enabled(&state.db, &name, true).await?;
            println!("Enabled plugin {name}");
            Ok(())
        }
        PluginCommand::Disable { name } => {
            state.plugins.set_enabled(&state.db, &name, false).await?;
            println!("Disabled plugin {name}");
            Ok(())
        }
        // Handled by `plugin_invoke`, before any service is booted.
        PluginCommand::Invoke { .. } => Ok(()),
    }
}

async fn plugin_invoke(
    config: &Config,
    name: &str,
    tap: &str,
    input: Option<String>,
) -> anyhow::Result<()> {
    let input = match input.as_deref() {
        None => "{}".to_owned(),
        Some("-") => std::io::read_to_string(std::io::stdin().lock())
            .context("reading the input from stdin")?,
        Some(json) => json.to_owned(),
    };
    serde_json::from_str::<serde::de::IgnoredAny>(&input).context("--input is not JSON")?;
    let bounds = trovato::plugin::Bounds::new(&config.plugin, &config.server.data_dir);
    let output =
        trovato::plugin::invoke_from_dir(&config.plugin.dir, name, tap, &input, bounds).await?;
    match output {
        Some(json) => println!("{}", json.get()),
        None => println!("null"),
    }
    Ok(())
}
