//! What a plugin instance may reach: the `trovato` host functions, a
//! capability-free WASI preview 1 for modules that import it, and the
//! per-instance bookkeeping the bounds need.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Caller, Extern, Linker, ResourceLimiter};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// The host import module.
pub const HOST_MODULE: &str = "trovato";
/// The WASI preview 1 import module.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";
/// Host functions of [`HOST_MODULE`] (ABI v1).
pub const HOST_FUNCTIONS: &[&str] = &["log", "queue_push"];
/// The host functions that may wait (on Redis or PostgreSQL): a module
/// importing one runs every call asynchronously.
pub const ASYNC_HOST_FUNCTIONS: &[&str] = &["queue_push"];

/// Where `trovato::queue_push` sends a plugin's jobs: the kernel's queues,
/// set once at start (a runtime without one, as `trovato plugin invoke`
/// has, answers [`PUSH_UNAVAILABLE`]).
pub trait QueueSink: Send + Sync {
    /// Enqueues `payload` (the guest's bytes, unchecked) on `queue` for
    /// `plugin`; the error is one of the `PUSH_*` codes.
    fn push(
        &self,
        plugin: &str,
        queue: &str,
        payload: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<(), i32>>;
}

/// `queue_push` results (ABI v1).
pub const PUSH_OK: i32 = 0;
/// The queue name is invalid or outside the plugin's namespace.
pub const PUSH_BAD_QUEUE: i32 = 1;
/// The payload is not JSON, or larger than a job may carry.
pub const PUSH_BAD_PAYLOAD: i32 = 2;
/// The queue backend did not take it (unavailable), or this runtime has
/// no queues.
pub const PUSH_UNAVAILABLE: i32 = 3;
/// The invocation already pushed [`PUSHES_MAX`] jobs.
pub const PUSH_TOO_MANY: i32 = 4;
/// Jobs one invocation may push.
pub const PUSHES_MAX: u32 = 1_000;
/// A payload longer than this is refused without being copied; the sink
/// holds payloads to the queue's own, smaller limit.
const PUSH_READ_MAX: usize = 4 * 1024 * 1024;

/// The `tracing` target of what plugins log.
const GUEST_TARGET: &str = "trovato::plugin::guest";
/// Longest guest log message kept; the rest is cut.
const LOG_MESSAGE_MAX: usize = 8 * 1024;
/// Log lines one invocation may write; beyond it they are counted, not
/// written, so a chatty plugin cannot flood the log.
const LOG_LINES_MAX: u32 = 100;
/// Bytes of WASI stdout/stderr kept per invocation.
const WASI_OUTPUT_MAX: usize = 64 * 1024;

/// Per-instance state: who is running, the bounds' bookkeeping, and WASI.
pub struct Host {
    pub plugin: Arc<str>,
    pub tap: Arc<str>,
    pub limits: Limits,
    /// When the invocation must stop.
    pub deadline: Instant,
    /// Set by the epoch callback when the deadline passed.
    pub timed_out: bool,
    /// What runs synchronously right now (the start function,
    /// `trovato_alloc`, `trovato_free`): it cannot yield, so the epoch
    /// callback bounds its CPU time instead.
    pub sync_call: Option<&'static str>,
    /// The thread's CPU time when the current synchronous call first
    /// reached an epoch deadline.
    pub sync_cpu_start: Option<std::time::Duration>,
    /// The synchronous call stopped for running too long.
    pub stalled: Option<&'static str>,
    pub log_lines: u32,
    pub wasi: Option<Wasi>,
    /// Where `queue_push` goes, if anywhere.
    pub sink: Option<Arc<dyn QueueSink>>,
    /// Jobs this invocation pushed.
    pub pushes: u32,
}

/// A capability-free WASI context whose stdout and stderr are captured.
pub struct Wasi {
    pub ctx: WasiP1Ctx,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl Default for Wasi {
    /// No preopened directories, no environment, no arguments, no sockets.
    fn default() -> Self {
        let stdout = MemoryOutputPipe::new(WASI_OUTPUT_MAX);
        let stderr = MemoryOutputPipe::new(WASI_OUTPUT_MAX);
        let ctx = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build_p1();
        Self {
            ctx,
            stdout,
            stderr,
        }
    }
}

impl Host {
    /// Writes what the plugin printed through WASI to the log.
    pub fn flush_wasi_output(&self) {
        let Some(wasi) = &self.wasi else { return };
        for (stream, pipe) in [("stdout", &wasi.stdout), ("stderr", &wasi.stderr)] {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes).lines() {
                if stream == "stderr" {
                    tracing::warn!(target: GUEST_TARGET, plugin = %self.plugin, tap = %self.tap, stream, "{line}");
                } else {
                    tracing::info!(target: GUEST_TARGET, plugin = %self.plugin, tap = %self.tap, stream, "{line}");
                }
            }
        }
        if self.log_lines > LOG_LINES_MAX {
            tracing::warn!(
                plugin = %self.plugin,
                tap = %self.tap,
                dropped = self.log_lines - LOG_LINES_MAX,
                "plugin log lines dropped"
            );
        }
    }
}

/// The linear-memory cap. Growing past it traps the instance (rather than
/// letting `memory.grow` return -1 for the guest to ignore), and the trap is
/// reported as [`super::PluginError::OutOfMemory`].
pub struct Limits {
    pub memory_bytes: usize,
    /// Set when a growth was refused.
    pub exceeded: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("linear memory limit of {0} bytes exceeded")]
pub struct MemoryLimitExceeded(pub usize);

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.exceeded = true;
            return Err(MemoryLimitExceeded(self.memory_bytes).into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; 100k is far beyond any real
        // plugin and keeps a table-grow loop from eating host memory.
        Ok(desired <= 100_000)
    }
}

/// Copies `len` bytes at `ptr` out of the caller's exported memory.
fn read_guest(
    caller: &mut Caller<'_, Host>,
    what: &str,
    ptr: i32,
    len: i32,
    max: usize,
) -> wasmtime::Result<Option<Vec<u8>>> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(wasmtime::Error::msg(format!(
            "{what} called without an exported memory"
        )));
    };
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    if len > max {
        return Ok(None);
    }
    let data = memory.data(&*caller);
    let bytes = data.get(start..start.saturating_add(len)).ok_or_else(|| {
        wasmtime::Error::msg(format!(
            "{what} argument at {start}+{len} is outside linear memory"
        ))
    })?;
    Ok(Some(bytes.to_vec()))
}

/// Adds the `trovato` host functions to `linker`.
pub fn add_host_functions(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        HOST_MODULE,
        "queue_push",
        |mut caller: Caller<'_, Host>, (qp, ql, pp, pl): (i32, i32, i32, i32)| {
            Box::new(async move {
                let Some(queue) = read_guest(&mut caller, "queue_push", qp, ql, 64)? else {
                    return Ok(PUSH_BAD_QUEUE);
                };
                let payload = read_guest(&mut caller, "queue_push", pp, pl, PUSH_READ_MAX)?;
                let Some(payload) = payload else {
                    return Ok(PUSH_BAD_PAYLOAD);
                };
                let Ok(queue) = String::from_utf8(queue) else {
                    return Ok(PUSH_BAD_QUEUE);
                };
                let host = caller.data_mut();
                if host.pushes >= PUSHES_MAX {
                    return Ok(PUSH_TOO_MANY);
                }
                let Some(sink) = host.sink.clone() else {
                    return Ok(PUSH_UNAVAILABLE);
                };
                let plugin = host.plugin.clone();
                match sink.push(&plugin, &queue, payload).await {
                    Ok(()) => {
                        caller.data_mut().pushes += 1;
                        Ok(PUSH_OK)
                    }
                    Err(code) => Ok(code),
                }
            })
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "log",
        |mut caller: Caller<'_, Host>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
                return Err(wasmtime::Error::msg(
                    "log called without an exported memory",
                ));
            };
            let (start, len) = (ptr as u32 as usize, len as u32 as usize);
            let text = {
                let data = memory.data(&caller);
                let end = start.saturating_add(len.min(LOG_MESSAGE_MAX));
                let bytes = data.get(start..end).ok_or_else(|| {
                    wasmtime::Error::msg(format!(
                        "log message at {start}+{len} is outside linear memory"
                    ))
                })?;
                String::from_utf8_lossy(bytes).into_owned()
            };
            let host = caller.data_mut();
            host.log_lines += 1;
            if host.log_lines > LOG_LINES_MAX {
                return Ok(());
            }
            let (plugin, tap) = (&host.plugin, &host.tap);
            match level {
                0 => tracing::error!(target: GUEST_TARGET, plugin = %plugin, tap = %tap, "{text}"),
                1 => tracing::warn!(target: GUEST_TARGET, plugin = %plugin, tap = %tap, "{text}"),
                2 => tracing::info!(target: GUEST_TARGET, plugin = %plugin, tap = %tap, "{text}"),
                3 => tracing::debug!(target: GUEST_TARGET, plugin = %plugin, tap = %tap, "{text}"),
                _ => tracing::trace!(target: GUEST_TARGET, plugin = %plugin, tap = %tap, "{text}"),
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// Adds WASI preview 1 to `linker`, backed by each store's [`Wasi`].
pub fn add_wasi(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_async(linker, |host: &mut Host| {
        // The WASI linker instantiates only modules that import WASI, and
        // their stores are always built with a context (see
        // `Runtime::invoke`), so this is never None.
        &mut host
            .wasi
            .as_mut()
            .expect("WASI modules always get a WASI context")
            .ctx
    })
}
