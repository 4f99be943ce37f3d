//! The `trovato` command: `serve`, `migrate`, `user ...`, `plugin ...`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use trovato::config::{CookieSecure, FileConfig, LogFormat};
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
    about = "The Trovato content management kernel"
)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
}

/// Settings shared by every command. Precedence: flag, then environment,
/// then the config file, then the default.
#[derive(Args)]
struct Settings {
    /// TOML config file (unknown keys are an error).
    #[arg(long, global = true, env = "TROVATO_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, global = true, env = "TROVATO_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// PostgreSQL URL; unset: start an embedded PostgreSQL under the data dir.
    #[arg(long, global = true, env = "DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// Redis URL; unset: start an embedded Redis under the data dir.
    #[arg(long, global = true, env = "REDIS_URL", value_name = "URL")]
    redis_url: Option<String>,
    /// Prefix of every Redis key the kernel writes [default: trovato:].
    #[arg(
        long,
        global = true,
        env = "TROVATO_REDIS_PREFIX",
        value_name = "PREFIX"
    )]
    redis_prefix: Option<String>,
    /// Directory for local state (embedded services, files) [default: ./var].
    #[arg(long, global = true, env = "TROVATO_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Directory holding plugins [default: ./plugins].
    #[arg(long, global = true, env = "TROVATO_PLUGIN_DIR", value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// Log line format [default: pretty].
    #[arg(long, global = true, env = "TROVATO_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Networks allowed to read /metrics, comma-separated CIDRs
    /// [default: loopback and private ranges].
    #[arg(
        long,
        global = true,
        env = "TROVATO_METRICS_ALLOW",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    metrics_allow: Option<Vec<IpNet>>,
    /// Seconds without requests after which a session ends [default: 7200].
    #[arg(
        long,
        global = true,
        env = "TROVATO_SESSION_IDLE_TIMEOUT",
        value_name = "SECS"
    )]
    session_idle_timeout: Option<u64>,
    /// When the session cookie is marked Secure [default: auto].
    #[arg(long, global = true, env = "TROVATO_COOKIE_SECURE", value_enum)]
    cookie_secure: Option<CookieSecure>,
    /// Largest accepted request body, in bytes [default: 2097152].
    #[arg(
        long,
        global = true,
        env = "TROVATO_MAX_BODY_BYTES",
        value_name = "BYTES"
    )]
    max_body_bytes: Option<usize>,
    /// PostgreSQL pool size [default: 16].
    #[arg(
        long,
        global = true,
        env = "TROVATO_DB_MAX_CONNECTIONS",
        value_name = "N"
    )]
    db_max_connections: Option<u32>,
    /// Seconds to wait for PostgreSQL and Redis at start-up [default: 5].
    #[arg(
        long,
        global = true,
        env = "TROVATO_CONNECT_TIMEOUT",
        value_name = "SECS"
    )]
    connect_timeout: Option<u64>,
    /// Deadline of a plugin tap run for a request, in ms [default: 100].
    #[arg(
        long,
        global = true,
        env = "TROVATO_PLUGIN_REQUEST_DEADLINE_MS",
        value_name = "MS"
    )]
    plugin_request_deadline_ms: Option<u64>,
    /// Deadline of tap_cron and tap_queue_worker, in seconds [default: 30].
    #[arg(
        long,
        global = true,
        env = "TROVATO_PLUGIN_BACKGROUND_DEADLINE",
        value_name = "SECS"
    )]
    plugin_background_deadline: Option<u64>,
    /// Largest linear memory of one plugin instance [default: 67108864].
    #[arg(
        long,
        global = true,
        env = "TROVATO_PLUGIN_MEMORY_LIMIT",
        value_name = "BYTES"
    )]
    plugin_memory_limit: Option<usize>,
    /// Largest output of one tap invocation [default: 4194304].
    #[arg(
        long,
        global = true,
        env = "TROVATO_PLUGIN_OUTPUT_LIMIT",
        value_name = "BYTES"
    )]
    plugin_output_limit: Option<usize>,
    /// Plugin instances alive at once; more invocations wait [default: 256].
    #[arg(
        long,
        global = true,
        env = "TROVATO_PLUGIN_MAX_INSTANCES",
        value_name = "N"
    )]
    plugin_max_instances: Option<u32>,
    /// Entries kept in the in-process cache [default: 10000].
    #[arg(
        long,
        global = true,
        env = "TROVATO_CACHE_L1_CAPACITY",
        value_name = "N"
    )]
    cache_l1_capacity: Option<u64>,
    /// Seconds an in-process cache entry lives [default: 60].
    #[arg(long, global = true, env = "TROVATO_CACHE_L1_TTL", value_name = "SECS")]
    cache_l1_ttl: Option<u64>,
    /// Seconds a Redis cache entry lives [default: 3600].
    #[arg(long, global = true, env = "TROVATO_CACHE_L2_TTL", value_name = "SECS")]
    cache_l2_ttl: Option<u64>,
    /// Reverse proxies whose X-Forwarded-For names the client,
    /// comma-separated CIDRs [default: loopback].
    #[arg(
        long,
        global = true,
        env = "TROVATO_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    trusted_proxies: Option<Vec<IpNet>>,
    /// Failed logins from one address per window; 0: no limit [default: 50].
    #[arg(
        long,
        global = true,
        env = "TROVATO_LOGIN_ADDRESS_LIMIT",
        value_name = "N"
    )]
    login_address_limit: Option<u32>,
    /// Seconds the failed logins of an address are counted [default: 3600].
    #[arg(
        long,
        global = true,
        env = "TROVATO_LOGIN_ADDRESS_WINDOW",
        value_name = "SECS"
    )]
    login_address_window: Option<u64>,
    /// Failed logins for one name from one address per window; 0: no limit
    /// [default: 5].
    #[arg(
        long,
        global = true,
        env = "TROVATO_LOGIN_NAME_LIMIT",
        value_name = "N"
    )]
    login_name_limit: Option<u32>,
    /// Seconds the failed logins of a name are counted [default: 21600].
    #[arg(
        long,
        global = true,
        env = "TROVATO_LOGIN_NAME_WINDOW",
        value_name = "SECS"
    )]
    login_name_window: Option<u64>,
    /// Seconds shutdown waits for background tasks [default: 10].
    #[arg(
        long,
        global = true,
        env = "TROVATO_SHUTDOWN_GRACE",
        value_name = "SECS"
    )]
    shutdown_grace: Option<u64>,
}

impl Settings {
    /// Defaults, then the file, then flags and environment.
    fn resolve(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(FileConfig::load(path)?),
            None => Config::default(),
        };
        config.apply(FileConfig {
            listen: self.listen,
            database_url: self.database_url,
            redis_url: self.redis_url,
            redis_prefix: self.redis_prefix,
            data_dir: self.data_dir,
            plugin_dir: self.plugin_dir,
            log_format: self.log_format,
            metrics_allow: self.metrics_allow,
            session_idle_timeout_secs: self.session_idle_timeout,
            cookie_secure: self.cookie_secure,
            max_body_bytes: self.max_body_bytes,
            db_max_connections: self.db_max_connections,
            connect_timeout_secs: self.connect_timeout,
            plugin_request_deadline_ms: self.plugin_request_deadline_ms,
            plugin_background_deadline_secs: self.plugin_background_deadline,
            plugin_memory_limit_bytes: self.plugin_memory_limit,
            plugin_output_limit_bytes: self.plugin_output_limit,
            plugin_max_instances: self.plugin_max_instances,
            cache_l1_capacity: self.cache_l1_capacity,
            cache_l1_ttl_secs: self.cache_l1_ttl,
            cache_l2_ttl_secs: self.cache_l2_ttl,
            trusted_proxies: self.trusted_proxies,
            login_address_limit: self.login_address_limit,
            login_address_window_secs: self.login_address_window,
            login_name_limit: self.login_name_limit,
            login_name_window_secs: self.login_name_window,
            shutdown_grace_secs: self.shutdown_grace,
        });
        config.validate()?;
        Ok(config)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server until SIGINT/SIGTERM.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect, enable, disable and try plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
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
        /// Email address.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trovato: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.settings.resolve()?;
    trovato::observe::logging::init(config.log_format);
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let kernel = Kernel::boot(config).await?;
            tracing::info!("migrations applied");
            kernel.shutdown().await;
            Ok(())
        }
        Command::User(cmd) => user(config, cmd).await,
        Command::Plugin(cmd) => plugin(config, cmd).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let kernel = Kernel::boot(config).await?;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            kernel.shutdown().await;
            anyhow::bail!("listen (TROVATO_LISTEN): cannot bind {listen}: {e}");
        }
    };
    let addr = listener.local_addr().context("listen (TROVATO_LISTEN)")?;
    tracing::info!(%addr, "listening");
    let result = trovato::serve(
        listener,
        kernel.state.clone(),
        trovato::app::shutdown_signal(),
    )
    .await;
    kernel.shutdown().await;
    tracing::info!("stopped");
    result.context("HTTP server")
}

async fn user(config: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let kernel = Kernel::boot(config).await?;
    let result = user_command(&kernel, cmd).await;
    kernel.shutdown().await;
    result
}

async fn user_command(kernel: &Kernel, cmd: UserCommand) -> anyhow::Result<()> {
    let db = &kernel.state.db;
    match cmd {
        UserCommand::Create {
            name,
            email,
            admin,
            password_stdin,
        } => {
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the password from stdin")?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
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
            let user = trovato::user::find_by_name(db, &name)
                .await?
                .with_context(|| format!("no user named `{name}`"))?;
            let token = trovato::user::token::create(db, user.id, &label).await?;
            println!("{token}");
            Ok(())
        }
    }
}

async fn plugin(config: Config, cmd: PluginCommand) -> anyhow::Result<()> {
    if let PluginCommand::Invoke { name, tap, input } = cmd {
        return plugin_invoke(&config, &name, &tap, input).await;
    }
    let kernel = Kernel::boot(config).await?;
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
    let bounds = trovato::plugin::Bounds::from_config(config);
    let output =
        trovato::plugin::invoke_from_dir(&config.plugin_dir, name, tap, &input, bounds).await?;
    match output {
        Some(json) => println!("{}", json.get()),
        None => println!("null"),
    }
    Ok(())
}
