//! WebAssembly plugins: loading, isolation, bounds and tap dispatch.

/// Every way a plugin can fail. Each variant names the plugin (and the tap,
/// where one was being invoked), so a log line or an API error is
/// self-explanatory.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin `{plugin}` not found")]
    NotFound { plugin: String },
    #[error("circular dependency involving plugin `{plugin}`")]
    CircularDependency { plugin: String },
    #[error("plugin `{plugin}` depends on missing plugin `{dependency}`")]
    MissingDependency { plugin: String, dependency: String },
}
