//! `tap_cron`: logs each cron run through the kernel's log.

use serde::Deserialize;
use trovato_plugin_sdk::{info, taps};

/// The input of `tap_cron`; fields the kernel does not send default.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Cron {
    /// Unix time of the run.
    pub timestamp: i64,
}

pub fn cron(input: Cron) {
    info!("cron_log: cron ran at {}", input.timestamp);
}

taps! { tap_cron => cron }
