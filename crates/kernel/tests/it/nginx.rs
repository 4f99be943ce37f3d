//! The shipped nginx config (deploy/nginx), run by a real nginx in front of
//! a kernel: proxying works, /metrics is closed to other addresses, and the
//! request id nginx assigns reaches the kernel.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use reqwest::StatusCode;

use crate::files::{PNG, Part, Site};
use crate::harness::{PATIENCE, TestApp, eventually, free_port, services::scratch_root};

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

/// nginx started with the shipped config in front of `app`, its public
/// files location pointed at the app's public directory.
struct Launched {
    _nginx: Nginx,
    base: String,
    dir: PathBuf,
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn launch(app: &TestApp) -> Launched {
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
    let public = app.files_dir.join("public");
    std::fs::create_dir_all(&public).expect("public dir");
    let site = substitute(
        &site,
        "alias /var/lib/trovato/files/public/;",
        &format!("alias {}/;", public.display()),
    );
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
         http {{\n include /etc/nginx/mime.types;\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
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

    let nginx = Nginx(
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
    let up = eventually(PATIENCE, || {
        let c = client.clone();
        let url = format!("{base}/healthz");
        async move { c.get(url).send().await.is_ok() }
    })
    .await;
    assert!(up.is_some(), "nginx did not come up");
    Launched {
        _nginx: nginx,
        base,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_nginx_config_proxies_and_guards_metrics() {
    let app = TestApp::spawn().await;
    let nginx = launch(&app).await;
    let base = nginx.base.clone();
    let client = reqwest::Client::new();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_public_files_from_disk_and_never_private_ones() {
    let site = Site::new().await;
    let nginx = launch(&site.app).await;
    let client = reqwest::Client::new();

    // An upload larger than the general body limit (2m), through nginx.
    let big = vec![b'z'; 3 * 1024 * 1024];
    let r = client
        .post(format!("{}/file/upload", nginx.base))
        .bearer_auth(&site.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={}", crate::files::BOUNDARY),
        )
        .body(crate::files::multipart(&[Part::file(
            "big.txt",
            "text/plain",
            &big,
        )]))
        .send()
        .await
        .expect("upload through nginx");
    assert_eq!(r.status(), StatusCode::CREATED);
    // Elsewhere the general limit holds.
    let r = client
        .post(format!("{}/api/items", nginx.base))
        .bearer_auth(&site.token)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .expect("large POST");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let public = site.upload("public", "pixel.png", "image/png", PNG).await;
    let url = public["url"].as_str().expect("url");
    let r = client
        .get(format!("{}{url}", nginx.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .expect("ascii")
            .contains("max-age=31536000")
    );
    assert!(r.headers().contains_key("etag"));
    assert!(
        !r.headers().contains_key("x-request-id"),
        "served by nginx from disk, not proxied"
    );
    assert_eq!(r.bytes().await.expect("body").as_ref(), PNG);

    // The private file's key under the public URL, traversal, the
    // incoming area: nothing.
    let private = site
        .upload("private", "secret.txt", "text/plain", b"secret")
        .await;
    let key = site.object_path(private["id"].as_str().expect("id")).await;
    let rel = key
        .strip_prefix(site.private_dir())
        .expect("under the private dir")
        .display()
        .to_string();
    std::fs::create_dir_all(site.public_dir().join(".incoming")).expect("incoming");
    std::fs::write(site.public_dir().join(".incoming/partial"), b"partial").expect("partial");
    for path in [
        format!("/files/{rel}"),
        format!("/files/../private/{rel}"),
        format!("/files/%2e%2e/private/{rel}"),
        "/files/.incoming/partial".to_owned(),
    ] {
        let r = client
            .get(format!("{}{path}", nginx.base))
            .send()
            .await
            .expect("GET");
        assert!(
            r.status() == StatusCode::NOT_FOUND || r.status() == StatusCode::BAD_REQUEST,
            "{path}: {}",
            r.status()
        );
        let body = r.bytes().await.expect("body");
        assert!(!body.windows(6).any(|w| w == b"secret"), "{path} leaked");
        assert_ne!(body.as_ref(), b"partial", "{path} leaked");
    }
    // Through the kernel, its owner gets it.
    let r = client
        .get(format!(
            "{}/file/{}",
            nginx.base,
            private["id"].as_str().expect("id")
        ))
        .bearer_auth(&site.token)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").as_ref(), b"secret");
}
