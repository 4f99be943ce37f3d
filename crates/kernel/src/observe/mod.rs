//! Observability: logging, Prometheus metrics, health checks.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod routes;
