//! The shipped nginx config (deploy/nginx), run by a real nginx in front of
//! a kernel: proxying works, /metrics is closed to other addresses, and the
//! request id nginx assigns reaches the kernel.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::{TestApp, eventually, free_port, services::scratch_root};

fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("nginx is not installed: run scripts/install-test-tools (the README's test command does)")
}

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx")
}

/// Replaces `from` with `to`, insisting the text was there.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "deploy/nginx/trovato.conf no longer contains `{from}`"
    );
    text.replace(from, to)
}

struct Nginx(std::process::Child);

impl Drop for Nginx {
    /// SIGTERM (not SIGKILL) so the master stops its workers too.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_nginx_config_proxies_and_guards_metrics() {
    let app = TestApp::spawn().await;
    let port = free_port();
    let dir = scratch_root().join(format!("nginx-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");

    let site = std::fs::read_to_string(deploy_dir().join("trovato.conf")).expect("trovato.conf");
    let site = substitute(
        &site,
        "server 127.0.0.1:8080;",
        &format!("server {};", app.addr),
    );
    let site = substitute(&site, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    let proxy = deploy_dir().join("trovato_proxy.conf");
    let site = substitute(
        &site,
        "/etc/nginx/trovato_proxy.conf",
        proxy.to_str().expect("utf8"),
    );
    std::fs::write(dir.join("trovato.conf"), site).expect("write site");
    let user = if nix::unistd::Uid::effective().is_root() {
        "user root;"
    } else {
        ""
    };
    let d = dir.display();
    let main = format!(
        "{user}\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 128; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         include {d}/trovato.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).expect("write main");

    let test = Command::new(nginx_bin())
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .output()
        .expect("nginx -t");
    assert!(
        test.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );

    let _nginx = Nginx(
        Command::new(nginx_bin())
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let up = eventually(Duration::from_secs(10), || {
        let c = client.clone();
        let url = format!("{base}/healthz");
        async move { c.get(url).send().await.is_ok() }
    })
    .await;
    assert!(up.is_some(), "nginx did not come up");

    let health = client
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::OK);
    let request_id = health.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        request_id.len() == 32 && request_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "the kernel keeps nginx's request id, got {request_id}"
    );

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics
            .text()
            .await
            .expect("text")
            .contains("trovato_http_request_duration_seconds")
    );

    // 127.0.0.2 is loopback but not on the allow list.
    let outsider = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let denied = outsider
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let allowed_elsewhere = outsider
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(allowed_elsewhere.status(), StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}
