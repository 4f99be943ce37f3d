//! Trovato: a content management kernel. See `ARCHITECTURE.md` and the
//! README's code tour for how the modules fit together.

#![forbid(unsafe_code)]

pub mod app;
pub mod batch;
pub mod cache;
pub mod category;
pub mod config;
pub mod cron;
pub mod db;
pub mod embedded;
pub mod error;
pub mod file;
pub mod http;
pub mod item;
pub mod kernel;
pub mod kv;
pub mod observe;
pub mod openapi;
pub mod page;
pub mod plugin;
pub mod queue;
pub mod search;
pub mod settings;
pub mod stage;
pub mod state;
pub mod tasks;
pub mod text;
pub mod user;

pub use app::{app, serve};
pub use error::AppError;
pub use kernel::Kernel;
pub use settings::Config;
pub use state::AppState;
