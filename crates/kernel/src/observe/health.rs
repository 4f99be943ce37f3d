//! Dependency probes for `/health`. Each probe is bounded by
//! [`PROBE_TIMEOUT`], so a hung dependency never hangs the endpoint, and the
//! probes run concurrently.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::kv::{Kv, KvError};

pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One dependency's state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `ok` or `error`.
    pub status: &'static str,
    /// Round-trip time of the probe, in milliseconds.
    pub latency_ms: f64,
    /// Why it failed: `timeout`, `refused`, `unavailable` or `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The underlying error message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` when every dependency answers, `error` otherwise.
    pub status: &'static str,
    pub checks: BTreeMap<&'static str, Check>,
}

impl Health {
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

fn reason_of(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("refused") {
        "refused"
    } else if m.contains("timed out") || m.contains("timeout") {
        "timeout"
    } else if m.contains("closed")
        || m.contains("broken pipe")
        || m.contains("reset")
        || m.contains("dropped")
    {
        "unavailable"
    } else {
        "error"
    }
}

async fn probe<F, E>(fut: F) -> Check
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let result = tokio::time::timeout(PROBE_TIMEOUT, fut).await;
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(Ok(())) => Check {
            status: "ok",
            latency_ms,
            reason: None,
            message: None,
        },
        Ok(Err(e)) => {
            let message = e.to_string();
            Check {
                status: "error",
                latency_ms,
                reason: Some(reason_of(&message)),
                message: Some(message),
            }
        }
        Err(_) => Check {
            status: "error",
            latency_ms,
            reason: Some("timeout"),
            message: Some(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
        },
    }
}

/// Probes PostgreSQL (`SELECT 1`) and Redis (`PING`) concurrently.
pub async fn check(db: &sqlx::PgPool, kv: &Kv) -> Health {
    let pg = probe(async { sqlx::query("SELECT 1").execute(db).await.map(|_| ()) });
    let redis = probe(async {
        let pong: String = kv.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(KvError::Unavailable(format!(
                "unexpected PING reply {pong}"
            )))
        }
    });
    let (pg, redis) = tokio::join!(pg, redis);
    let ok = pg.status == "ok" && redis.status == "ok";
    let mut checks = BTreeMap::new();
    checks.insert("postgres", pg);
    checks.insert("redis", redis);
    Health {
        status: if ok { "ok" } else { "error" },
        checks,
    }
}
