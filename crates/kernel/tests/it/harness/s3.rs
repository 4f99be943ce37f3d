//! A real S3 server for the S3 backend's tests: SeaweedFS (`weed mini`,
//! installed by `scripts/install-test-tools`), one per test, on free
//! loopback ports, with one identity whose signatures it checks.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use trovato::file::FileSettings;
use trovato::file::settings::Backend;

use super::{PATIENCE, eventually, free_port, services::scratch_root};

pub const ACCESS_KEY: &str = "trovato-test-key";
pub const SECRET_KEY: &str = "trovato-test-secret-0123456789";
pub const BUCKET: &str = "trovato-test";

fn weed_bin() -> PathBuf {
    let tools = std::env::var_os("TROVATO_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/trovato-tools")))
        .expect("HOME or TROVATO_TOOLS_DIR");
    let bin = tools.join("venv/bin/weed");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/install-test-tools (the README's test command does)",
        bin.display()
    );
    bin
}

/// A running `weed mini`, stopped (and its data removed) on drop.
pub struct Weed {
    child: Child,
    dir: PathBuf,
    pub endpoint: String,
    /// The filer's HTTP address: lists what the S3 gateway stores,
    /// including unfinished multipart uploads.
    pub filer: String,
}

impl Weed {
    pub async fn start() -> Self {
        let dir = scratch_root().join(format!("weed-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(dir.join("data")).expect("weed dir");
        let config = dir.join("s3.json");
        let identities = serde_json::json!({"identities": [{
            "name": "trovato",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        std::fs::write(&config, identities.to_string()).expect("s3.json");
        let s3 = free_port();
        let filer = free_port();
        let port = |name: &str, p: u16| format!("-{name}={p}");
        let mut cmd = Command::new(weed_bin());
        cmd.arg("mini")
            .arg(format!("-dir={}", dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(port("master.port", free_port()))
            .arg(port("master.port.grpc", free_port()))
            .arg(port("volume.port", free_port()))
            .arg(port("volume.port.grpc", free_port()))
            .arg(port("filer.port", filer))
            .arg(port("filer.port.grpc", free_port()))
            .arg(port("s3.port", s3))
            .arg(port("s3.port.grpc", free_port()))
            .arg(port("admin.port", free_port()))
            .arg(port("admin.port.grpc", free_port()))
            .arg(port("webdav.port", free_port()))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
            .arg(format!("-s3.localSocket={}", dir.join("s3.sock").display()))
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-bucket={BUCKET}"))
            .arg("-master.telemetry=false")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("weed.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        let child = cmd.spawn().expect("spawn weed mini");
        let weed = Self {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            filer: format!("http://127.0.0.1:{filer}"),
        };
        // Ready when a signed request finds the bucket.
        let storage = trovato::file::s3::S3Storage::new(
            trovato::file::s3::client(&weed.settings()).expect("s3 client"),
            "public",
        );
        let ready = eventually(PATIENCE, || async {
            trovato::file::FileStorage::probe(&storage).await.is_ok()
        })
        .await;
        assert!(
            ready.is_some(),
            "weed mini did not serve the bucket in time; log: {}",
            std::fs::read_to_string(weed.dir.join("weed.log")).unwrap_or_default()
        );
        weed
    }

    /// File settings for the S3 backend on this server.
    pub fn settings(&self) -> FileSettings {
        FileSettings {
            backend: Backend::S3,
            s3_endpoint: Some(self.endpoint.clone()),
            s3_bucket: Some(BUCKET.into()),
            s3_access_key_id: Some(ACCESS_KEY.into()),
            s3_secret_access_key: Some(SECRET_KEY.into()),
            s3_path_style: true,
            ..FileSettings::default()
        }
    }

    /// The multipart uploads the server still holds (started, neither
    /// completed nor aborted), as the filer lists them.
    pub async fn pending_uploads(&self) -> usize {
        let url = format!("{}/buckets/{BUCKET}/.uploads/", self.filer);
        let resp = reqwest::Client::new()
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .expect("filer listing");
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return 0;
        }
        let listing: serde_json::Value = resp.json().await.expect("filer JSON");
        listing["Entries"].as_array().map_or(0, Vec::len)
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
