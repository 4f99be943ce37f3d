//! Dependency probes for `/health`: a list of named probes ([`Probes`])
//! that subsystems add to at start-up. Each probe is bounded by
//! [`PROBE_TIMEOUT`], so a hung dependency never hangs the endpoint, and the
//! probes run concurrently.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
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
    /// What the reason means, in the kernel's own words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'static str>,
    /// The underlying error (driver text): logged, and shown only to the
    /// networks in `observe.metrics_allow`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The kernel's sentence for a failure reason.
pub fn reason_message(reason: &str) -> &'static str {
    match reason {
        "timeout" => "did not answer within the probe timeout",
        "refused" => "refused the connection",
        "unavailable" => "the connection was lost",
        _ => "answered with an error",
    }
}

impl Check {
    fn failed(latency_ms: f64, reason: &'static str, detail: String) -> Self {
        Self {
            status: "error",
            latency_ms,
            reason: Some(reason),
            message: Some(reason_message(reason)),
            detail: Some(detail),
        }
    }
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

    /// The answer for a client outside `metrics_allow`: reasons and the
    /// kernel's sentences, without the driver's text.
    pub fn without_details(mut self) -> Self {
        for check in self.checks.values_mut() {
            check.detail = None;
        }
        self
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
            detail: None,
        },
        Ok(Err(e)) => {
            let detail = e.to_string();
            Check::failed(latency_ms, reason_of(&detail), detail)
        }
        Err(_) => Check::failed(
            latency_ms,
            "timeout",
            format!("no answer within {} ms", PROBE_TIMEOUT.as_millis()),
        ),
    }
}

/// The name a probe reports under in `/health`'s `checks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ProbeName(&'static str);

impl ProbeName {
    pub const POSTGRES: ProbeName = ProbeName("postgres");
    pub const REDIS: ProbeName = ProbeName("redis");

    /// A subsystem's own probe name (`storage`, `search`, ...).
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

/// What a probe runs: `Ok` when its dependency answers.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

type ProbeFn = dyn Fn() -> ProbeFuture + Send + Sync;

/// The named probes `/health` runs, concurrently, each within
/// [`PROBE_TIMEOUT`]. Subsystems add theirs at start-up.
#[derive(Clone, Default)]
pub struct Probes {
    probes: Vec<(ProbeName, Arc<ProbeFn>)>,
}

impl Probes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the probe called `name`.
    pub fn add<F, Fut>(&mut self, name: ProbeName, probe: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.probes.retain(|(n, _)| *n != name);
        self.probes
            .push((name, Arc::new(move || Box::pin(probe()) as ProbeFuture)));
    }

    /// The probes' names, in registration order.
    pub fn names(&self) -> Vec<ProbeName> {
        self.probes.iter().map(|(n, _)| *n).collect()
    }

    /// The kernel's own: PostgreSQL (`SELECT 1`) and Redis (`PING`).
    pub fn kernel(db: &sqlx::PgPool, kv: &Kv) -> Self {
        let mut probes = Self::new();
        let db = db.clone();
        probes.add(ProbeName::POSTGRES, move || {
            let db = db.clone();
            async move {
                sqlx::query("SELECT 1")
                    .execute(&db)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        });
        let kv = kv.clone();
        probes.add(ProbeName::REDIS, move || {
            let kv = kv.clone();
            async move {
                let pong: String = kv
                    .query(&redis::cmd("PING"))
                    .await
                    .map_err(|e| e.to_string())?;
                if pong == "PONG" {
                    Ok(())
                } else {
                    Err(KvError::Unavailable(format!("unexpected PING reply {pong}")).to_string())
                }
            }
        });
        probes
    }

    /// Runs every probe concurrently.
    pub async fn check(&self) -> Health {
        let results =
            futures::future::join_all(self.probes.iter().map(|(_, run)| probe(run()))).await;
        let checks: BTreeMap<&'static str, Check> = self
            .probes
            .iter()
            .map(|(name, _)| name.as_str())
            .zip(results)
            .collect();
        let ok = checks.values().all(|c| c.status == "ok");
        Health {
            status: if ok { "ok" } else { "error" },
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_probe_is_reported_under_its_name() {
        let mut probes = Probes::new();
        probes.add(ProbeName::new("up"), || async { Ok(()) });
        probes.add(ProbeName::new("down"), || async {
            Err("connection refused".to_string())
        });
        let h = probes.check().await;
        assert!(!h.is_ok());
        assert_eq!(h.checks["up"].status, "ok");
        assert_eq!(h.checks["down"].status, "error");
        assert_eq!(h.checks["down"].reason, Some("refused"));
    }

    #[tokio::test]
    async fn a_hung_probe_is_a_timeout() {
        let mut probes = Probes::new();
        probes.add(ProbeName::new("hung"), std::future::pending);
        let h = probes.check().await;
        assert_eq!(h.checks["hung"].reason, Some("timeout"));
    }

    #[test]
    fn adding_a_name_twice_replaces_the_probe() {
        let mut probes = Probes::new();
        probes.add(ProbeName::REDIS, || async { Ok(()) });
        probes.add(ProbeName::REDIS, || async { Ok(()) });
        assert_eq!(probes.names(), vec![ProbeName::REDIS]);
    }
}
