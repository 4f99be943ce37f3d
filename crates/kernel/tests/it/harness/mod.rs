//! Test harness: a kernel per test, in-process on port 0 ([`TestApp`]) or as
//! separate `trovato serve` processes ([`Cluster`]), each with its own
//! database and Redis namespace.

pub mod browser;
pub mod content;
pub mod s3;
pub mod services;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::sync::oneshot;
use trovato::Config;
use trovato::{AppState, Kernel};

pub use services::services;

/// A kernel served in-process on 127.0.0.1:0.
pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    /// A client with a cookie store (a browser, in effect).
    pub client: reqwest::Client,
    /// The CSRF token of the client's session, after [`TestApp::login`].
    csrf: Mutex<Option<String>>,
    db_name: String,
    /// Where this test's local file storage lives (removed on drop).
    pub files_dir: std::path::PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// How long a test waits for something that must happen: generous, so a
/// loaded machine never fails a test that is right, and a wait for
/// something that never comes still ends. Never a claim about speed
/// (benchmarks under `bench/` measure that).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A per-test Redis prefix.
pub fn test_prefix() -> String {
    format!("trovato-test:{}:", uuid::Uuid::now_v7().simple())
}

/// Every session key under `kv`'s prefix (not the users' session indexes
/// nor the sessions' companion keys), from every node of a cluster.
pub async fn session_keys(kv: &trovato::kv::Kv) -> Vec<String> {
    let mut scan = kv.scan("{session:*}:*").await.expect("scan");
    let mut keys = Vec::new();
    while let Some(batch) = scan.next_batch().await.expect("scan") {
        keys.extend(batch.into_iter().filter(|k| {
            // `<prefix>{session:<bucket>}:<digest>`: one colon after the tag.
            k.rsplit_once('}')
                .is_some_and(|(_, rest)| rest.matches(':').count() == 1)
        }));
    }
    keys
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}, Router::new()).await
    }

    /// Spawns with a customised config, and `extra` routes mounted inside
    /// the kernel's middleware (for panic and similar tests).
    pub async fn spawn_with(customise: impl FnOnce(&mut Config), extra: Router<AppState>) -> Self {
        let s = services().await;
        let (db_name, db_url) = services::create_test_database().await;
        let mut config = Config::default();
        config.db.url = Some(db_url);
        config.redis.url = Some(s.redis_url.clone());
        config.redis.prefix = test_prefix();
        // Each test's files in a directory of its own.
        let files_dir =
            services::scratch_root().join(format!("files-{}", uuid::Uuid::now_v7().simple()));
        config.files.public_dir = Some(files_dir.join("public"));
        config.files.private_dir = Some(files_dir.join("private"));
        customise(&mut config);
        let state = Kernel::connect(config).await.expect("kernel connects");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let app = trovato::app::app_with(state.clone(), extra);
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        });
        Self {
            addr,
            state,
            client: client(),
            csrf: Mutex::new(None),
            db_name,
            files_dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Starts a graceful shutdown without waiting for it: the listener
    /// closes, in-flight requests go on.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Starts a graceful shutdown and waits until the server has stopped.
    pub async fn shut_down(&mut self) {
        self.begin_shutdown();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// Creates a user directly through the kernel's user module.
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        admin: bool,
    ) -> trovato::user::User {
        trovato::user::create(
            &self.state.db,
            trovato::user::NewUser {
                name,
                email: &format!("{}@example.com", name.to_lowercase()),
                password,
                admin,
            },
        )
        .await
        .expect("create user")
    }

    /// Logs in with the JSON API using this app's cookie-keeping client,
    /// and remembers the session's CSRF token for [`TestApp::csrf_token`].
    pub async fn login(&self, name: &str, password: &str) -> reqwest::Response {
        let resp = self
            .client
            .post(self.url("/user/login"))
            .json(&serde_json::json!({"name": name, "password": password}))
            .send()
            .await
            .expect("POST /user/login");
        if let Some(token) = self.session_token(&resp) {
            let session = trovato::user::session::load(
                &self.state.kv,
                &token,
                self.state.config.session.idle_timeout(),
            )
            .await
            .expect("redis");
            *self.csrf.lock().expect("csrf lock") = session.map(|s| s.csrf_token);
        }
        resp
    }

    /// The CSRF token of the session [`TestApp::login`] started (empty
    /// before any): what a page's script sends as `X-CSRF-Token`.
    pub fn csrf_token(&self) -> String {
        self.csrf
            .lock()
            .expect("csrf lock")
            .clone()
            .unwrap_or_default()
    }

    /// The environment a `trovato` command (see [`run_trovato`]) needs to
    /// reach this kernel's database and Redis namespace, with no plugins.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        let c = &self.state.config;
        vec![
            ("DATABASE_URL".into(), c.db.url.clone().expect("db url")),
            ("REDIS_URL".into(), c.redis.url.clone().expect("redis url")),
            ("TROVATO_REDIS_PREFIX".into(), c.redis.prefix.clone()),
            ("TROVATO_PLUGIN_DIR".into(), "/nonexistent-plugins".into()),
            // Its data (the plugin compile cache) with the test's files.
            (
                "TROVATO_DATA_DIR".into(),
                self.files_dir.join("data").to_string_lossy().into_owned(),
            ),
        ]
    }

    /// The value of this client's session cookie, if any.
    pub fn session_token(&self, resp: &reqwest::Response) -> Option<String> {
        resp.cookies()
            .find(|c| c.name() == trovato::user::session::COOKIE)
            .map(|c| c.value().to_owned())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // The kernel's background tasks end with the test.
        self.state.tasks.token().cancel();
        self.state.db.close_event();
        services::cleanup(self.db_name.clone(), self.state.config.redis.prefix.clone());
        let _ = std::fs::remove_dir_all(&self.files_dir);
    }
}

/// One `trovato serve` process.
pub struct Process {
    pub addr: SocketAddr,
    child: Child,
    /// Drains stderr into `logs`; finishes at the process's exit.
    reader: Option<std::thread::JoinHandle<()>>,
    /// Every log line the process wrote to stderr so far.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM and waits for the exit status and the last log line.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().expect("wait for trovato");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }

    pub fn logs_contain(&self, needle: &str) -> bool {
        self.logs
            .lock()
            .map(|l| l.iter().any(|x| x.contains(needle)))
            .unwrap_or(false)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
    }
}

/// N separate `trovato serve` processes sharing one database and one Redis
/// namespace, as behind a load balancer.
pub struct Cluster {
    pub nodes: Vec<Process>,
    pub db_url: String,
    pub redis_prefix: String,
    db_name: String,
}

/// The `trovato` binary built for these tests.
pub fn trovato_bin() -> &'static str {
    env!("CARGO_BIN_EXE_trovato")
}

/// `env` as the `(&str, &str)` pairs [`run_trovato`] takes.
pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Runs `trovato ARGS` to completion with `env` on top of this process's
/// environment minus its service URLs, feeding `stdin` when given.
pub fn run_trovato(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut cmd = Command::new(trovato_bin());
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn trovato");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for trovato")
}

impl Cluster {
    pub async fn spawn(n: usize) -> Self {
        Self::spawn_with_env(n, &[]).await
    }

    pub async fn spawn_with_env(n: usize, env: &[(&str, &str)]) -> Self {
        let s = services().await;
        let (db_name, db_url) = services::create_test_database().await;
        let redis_prefix = test_prefix();
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(spawn_process(&db_url, &s.redis_url, &redis_prefix, env));
        }
        Self {
            nodes,
            db_url,
            redis_prefix,
            db_name,
        }
    }
}

impl Cluster {
    /// A pool on the cluster's database, with the administrator `admin`
    /// (password [`content::PASSWORD`]) created in it.
    pub async fn with_admin(&self) -> sqlx::PgPool {
        let pool = sqlx::PgPool::connect(&self.db_url).await.expect("db");
        trovato::user::create(
            &pool,
            trovato::user::NewUser {
                name: "admin",
                email: "admin@example.com",
                password: content::PASSWORD,
                admin: true,
            },
        )
        .await
        .expect("admin");
        pool
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        services::cleanup(self.db_name.clone(), self.redis_prefix.clone());
    }
}

/// Starts `trovato serve` on an ephemeral port and waits for its
/// "listening" log line.
pub fn spawn_process(db_url: &str, redis_url: &str, prefix: &str, env: &[(&str, &str)]) -> Process {
    let mut cmd = Command::new(trovato_bin());
    cmd.arg("serve")
        .env("DATABASE_URL", db_url)
        .env("REDIS_URL", redis_url)
        .env("TROVATO_REDIS_PREFIX", prefix)
        .env("TROVATO_LISTEN", "127.0.0.1:0")
        .env("TROVATO_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn trovato serve");
    let stderr = child.stderr.take().expect("stderr piped");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let sink = logs.clone();
    let reader = std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = listening_addr(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Ok(addr) = rx.recv_timeout(Duration::from_millis(100)) {
            break addr;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "trovato serve exited with {status}: {:?}",
                logs.lock().map(|l| l.clone()).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "trovato serve did not start within 60 s"
        );
    };
    Process {
        addr,
        child,
        reader: Some(reader),
        logs,
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// Polls `check` every 50 ms until it returns true or `limit` passes;
/// returns how long it took, or `None`. `limit` is patience (usually
/// [`PATIENCE`]), not a claim: never assert on the time it took.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback TCP port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
