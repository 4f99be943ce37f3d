//! The wasmtime side: one engine per set of bounds (shared by every kernel
//! in the process), modules compiled once, and a bounded fresh instance
//! per invocation.
//!
//! Bounds on every invocation:
//! - a deadline, enforced by epoch interruption: a ticker thread advances
//!   the engine's epoch every [`EPOCH_TICK`]; from its second tick on, a
//!   running guest yields to tokio at each tick (so a looping plugin never
//!   holds a worker thread) and is stopped once its deadline has passed;
//! - a linear-memory cap, through the pooling allocator's slot size and a
//!   [`wasmtime::ResourceLimiter`] that traps on growth past it;
//! - a wasm stack cap ([`WASM_STACK_BYTES`]);
//! - an output-size cap, checked before the output is copied out;
//! - a cap on live instances (the pool's slots); invocations beyond it wait
//!   for a slot instead of failing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use wasmtime::{
    Engine, EngineWeak, Extern, ExternType, FuncType, Instance, InstanceAllocationStrategy,
    InstancePre, Linker, Module, ModuleExport, PoolingAllocationConfig, Store, Trap, TypedFunc,
    UpdateDeadline, ValType,
};

use super::PluginError;
use super::PluginSettings;
use super::host::{self, Host, Limits, Wasi};

/// How often the epoch advances: the granularity of deadlines, and the
/// longest a running guest goes without yielding to tokio.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Ticks before a running guest first yields: an invocation shorter than a
/// millisecond (nearly all of them) runs without a context switch, and a
/// runaway one holds its worker thread for at most two ticks.
const FIRST_YIELD_TICKS: u64 = 2;
/// The CPU time a synchronous call (the start function, `trovato_alloc`,
/// `trovato_free`) may use past its first [`FIRST_YIELD_TICKS`] before it
/// is stopped: such a call cannot yield, so a runaway one holds its worker
/// about as long as a tap's first slice. Counted in the thread's CPU time,
/// not wall time, so a thread the OS preempted is not stopped for it.
const SYNC_CPU_LIMIT: Duration = Duration::from_millis(2);
/// The wasm stack a guest may use; deeper recursion traps.
pub const WASM_STACK_BYTES: usize = 512 * 1024;
/// The native stack each async invocation runs on (wasm stack plus room
/// for host calls).
const ASYNC_STACK_BYTES: usize = 2 * 1024 * 1024;
/// Extra time granted past the deadline before the invocation's future is
/// dropped: the backstop for a guest blocked in a host call that waits
/// (`queue_push`, WASI), where epoch checks do not run.
const DEADLINE_GRACE: Duration = Duration::from_millis(50);

/// The bounds every invocation runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    pub request_deadline: Duration,
    pub background_deadline: Duration,
    pub memory_bytes: usize,
    pub output_bytes: usize,
    pub max_instances: u32,
    /// Where compiled modules are cached across restarts; `None`: no cache.
    pub cache_dir: Option<PathBuf>,
}

impl Bounds {
    /// The configured bounds; compiled modules are cached under `data_dir`.
    pub fn new(s: &PluginSettings, data_dir: &Path) -> Self {
        Self {
            request_deadline: Duration::from_millis(s.request_deadline_ms),
            background_deadline: Duration::from_secs(s.background_deadline_secs),
            memory_bytes: s.memory_limit_bytes,
            output_bytes: s.output_limit_bytes,
            max_instances: s.max_instances,
            cache_dir: Some(data_dir.join("plugin-cache")),
        }
    }

    /// The deadline of one invocation of `tap`.
    pub fn deadline_for(&self, tap: &str) -> Duration {
        if super::Tap::from_name(tap).is_some_and(super::Tap::is_background) {
            self.background_deadline
        } else {
            self.request_deadline
        }
    }
}

/// An engine and its instance slots.
#[derive(Clone)]
struct Pool {
    engine: Engine,
    slots: Arc<Semaphore>,
}

/// Engines by (memory cap, slots, cache). The pooling allocator reserves
/// address space for every slot when the engine is built (about 4 GiB
/// each), so kernels in one process (tests, embedders) share engines
/// instead of each reserving their own.
/// Held weakly: an engine (and its reservation and epoch thread) goes away
/// once no kernel uses it.
static POOLS: OnceLock<Mutex<Vec<PoolEntry>>> = OnceLock::new();

type PoolEntry = (PoolKey, EngineWeak, Arc<Semaphore>);

/// Memory cap, slot count and cache directory: what an engine is built
/// from.
type PoolKey = (usize, u32, Option<PathBuf>);

fn pool_for(bounds: &Bounds) -> Result<Pool, String> {
    let key = (
        bounds.memory_bytes,
        bounds.max_instances,
        bounds.cache_dir.clone(),
    );
    let pools = POOLS.get_or_init(|| Mutex::new(Vec::new()));
    let mut pools = pools.lock().unwrap_or_else(|p| p.into_inner());
    pools.retain(|(_, weak, _)| weak.upgrade().is_some());
    let live = pools
        .iter()
        .find(|(k, _, _)| *k == key)
        .and_then(|(_, weak, slots)| {
            weak.upgrade().map(|engine| Pool {
                engine,
                slots: slots.clone(),
            })
        });
    if let Some(pool) = live {
        return Ok(pool);
    }
    let engine = build_engine(bounds).map_err(|e| format!("{e:#}"))?;
    start_epoch_ticker(&engine);
    let pool = Pool {
        engine,
        slots: Arc::new(Semaphore::new(bounds.max_instances as usize)),
    };
    pools.push((key, pool.engine.weak(), pool.slots.clone()));
    Ok(pool)
}

fn build_engine(bounds: &Bounds) -> wasmtime::Result<Engine> {
    let n = bounds.max_instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(n)
        .total_memories(n)
        .total_tables(n)
        .total_stacks(n)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_memory_size(bounds.memory_bytes)
        // Reset the first MiB of memory with memset instead of madvise, so
        // a fresh instance starts on warm pages instead of page-faulting
        // (halves a typical invocation of a Rust plugin built with a small
        // shadow stack; see plugins/.cargo). PAGEMAP_SCAN, which would
        // reset only the dirtied pages, stays off: wasmtime 48 skips dirty
        // pages that are swapped out, which could show one invocation's
        // memory to the next.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 * 1024);
    let mut config = wasmtime::Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        .async_stack_size(ASYNC_STACK_BYTES)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .parallel_compilation(true);
    if let Some(dir) = &bounds.cache_dir {
        config.cache(compile_cache(dir));
    }
    Engine::new(&config)
}

/// wasmtime's on-disk cache of compiled modules under `dir`, so a restart
/// skips compilation. Without it (unwritable directory, say) modules are
/// compiled at every start, which is slower but correct.
fn compile_cache(dir: &std::path::Path) -> Option<wasmtime::Cache> {
    let made = std::fs::create_dir_all(dir).and_then(|()| std::path::absolute(dir));
    let dir = match made {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no plugin compile cache");
            return None;
        }
    };
    let mut cache_config = wasmtime::CacheConfig::new();
    cache_config.with_directory(&dir);
    match wasmtime::Cache::new(cache_config) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no plugin compile cache");
            None
        }
    }
}

/// Advances the engine's epoch every tick until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("plugin-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        // Without the ticker no deadline fires; the tokio timeout backstop
        // in `invoke` still ends every invocation.
        tracing::error!(error = %e, "cannot start the plugin epoch ticker");
    }
}

/// A compiled module, checked against ABI v1 and linked, ready to be
/// instantiated.
pub struct Compiled {
    pre: InstancePre<Host>,
    uses_wasi: bool,
    /// No import may wait (no WASI, no `queue_push`): instantiation,
    /// `trovato_alloc` and `trovato_free` run synchronously, skipping a
    /// fiber each; only the tap runs as a future.
    sync_calls: bool,
    /// The plugin's name, shared by every invocation's [`Host`].
    plugin: Arc<str>,
    /// The ABI exports, resolved once: looking an export up by index in a
    /// fresh instance skips the by-name search.
    memory: ModuleExport,
    alloc: ModuleExport,
    free: Option<ModuleExport>,
    /// Each tap checked at compile time, with its name as [`Host`] holds it.
    taps: Vec<(Arc<str>, ModuleExport)>,
}

impl Compiled {
    fn tap(&self, name: &str) -> Option<&(Arc<str>, ModuleExport)> {
        self.taps.iter().find(|(t, _)| &**t == name)
    }
}

/// Compiles plugins and invokes their taps under [`Bounds`].
#[derive(Clone)]
pub struct Runtime {
    pool: Pool,
    linker: Arc<Linker<Host>>,
    wasi_linker: Arc<Linker<Host>>,
    bounds: Arc<Bounds>,
    /// `trovato_plugin_instances_active`, resolved once.
    instances: metrics::Gauge,
    /// Where `queue_push` goes; set once by the kernel.
    sink: Arc<std::sync::OnceLock<Arc<dyn host::QueueSink>>>,
}

impl Runtime {
    pub fn new(bounds: Bounds) -> Result<Self, String> {
        let pool = pool_for(&bounds)?;
        let mut linker = Linker::new(&pool.engine);
        host::add_host_functions(&mut linker).map_err(|e| format!("{e:#}"))?;
        let mut wasi_linker = linker.clone();
        host::add_wasi(&mut wasi_linker).map_err(|e| format!("{e:#}"))?;
        Ok(Self {
            pool,
            linker: Arc::new(linker),
            wasi_linker: Arc::new(wasi_linker),
            bounds: Arc::new(bounds),
            instances: metrics::gauge!("trovato_plugin_instances_active"),
            sink: Arc::default(),
        })
    }

    /// Sends every instance's `queue_push` to `sink` from now on (the
    /// first call wins).
    pub fn set_queue_sink(&self, sink: Arc<dyn host::QueueSink>) {
        let _ = self.sink.set(sink);
    }

    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// Compiles `bytes` (binary or text format) and checks the ABI: the
    /// imports it may use, `memory`, `trovato_alloc`, one export per tap in
    /// `taps`, and `trovato_free`'s signature when present. CPU-heavy: call
    /// it off the async workers.
    pub fn compile(
        &self,
        plugin: &str,
        bytes: &[u8],
        taps: &[String],
    ) -> Result<Compiled, PluginError> {
        let module =
            Module::new(&self.pool.engine, bytes).map_err(|e| PluginError::InvalidModule {
                plugin: plugin.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let mut uses_wasi = false;
        let mut waits = false;
        for import in module.imports() {
            match import.module() {
                host::HOST_MODULE if host::HOST_FUNCTIONS.contains(&import.name()) => {
                    waits |= host::ASYNC_HOST_FUNCTIONS.contains(&import.name());
                }
                host::WASI_MODULE => uses_wasi = true,
                m => {
                    return Err(PluginError::UnknownImport {
                        plugin: plugin.to_owned(),
                        import: format!("{m}::{}", import.name()),
                    });
                }
            }
        }
        let Some(ExternType::Memory(memory)) = module.get_export("memory") else {
            return Err(PluginError::MissingMemory {
                plugin: plugin.to_owned(),
            });
        };
        let initial = memory.minimum().saturating_mul(memory.page_size());
        if initial > self.bounds.memory_bytes as u64 {
            return Err(PluginError::InvalidModule {
                plugin: plugin.to_owned(),
                reason: format!(
                    "its memory starts at {initial} bytes; the limit is {}",
                    self.bounds.memory_bytes
                ),
            });
        }
        let export =
            |name: &str, params: &[ValType], results: &[ValType], expected: &'static str| {
                let ok = match module.get_export(name) {
                    Some(ExternType::Func(f)) => signature_is(&f, params, results),
                    _ => false,
                };
                if ok {
                    Ok(())
                } else {
                    Err(PluginError::MissingExport {
                        plugin: plugin.to_owned(),
                        export: name.to_owned(),
                        signature: expected,
                    })
                }
            };
        export(
            "trovato_alloc",
            &[ValType::I32],
            &[ValType::I32],
            "(i32) -> i32",
        )?;
        for tap in taps {
            export(
                tap,
                &[ValType::I32, ValType::I32],
                &[ValType::I64],
                "(i32, i32) -> i64",
            )?;
        }
        let has_free = module.get_export("trovato_free").is_some();
        if has_free {
            export(
                "trovato_free",
                &[ValType::I32, ValType::I32],
                &[],
                "(i32, i32) -> ()",
            )?;
        }
        let linker = if uses_wasi {
            &self.wasi_linker
        } else {
            &self.linker
        };
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| PluginError::UnknownImport {
                plugin: plugin.to_owned(),
                import: format!("{e:#}"),
            })?;
        // Every name below was checked against the module above.
        let index = |name: &str| {
            module
                .get_export_index(name)
                .ok_or_else(|| PluginError::InvalidModule {
                    plugin: plugin.to_owned(),
                    reason: format!("export {name} has no index"),
                })
        };
        let memory = index("memory")?;
        let alloc = index("trovato_alloc")?;
        let free = if has_free {
            Some(index("trovato_free")?)
        } else {
            None
        };
        let taps = taps
            .iter()
            .map(|t| Ok((Arc::from(t.as_str()), index(t)?)))
            .collect::<Result<_, PluginError>>()?;
        Ok(Compiled {
            pre,
            uses_wasi,
            sync_calls: !uses_wasi && !waits,
            plugin: Arc::from(plugin),
            memory,
            alloc,
            free,
            taps,
        })
    }

    /// Runs `tap` of `module` on `input` (JSON) in a fresh instance.
    /// `Ok(None)` is the tap's "no output"; `Ok(Some(json))` is checked
    /// UTF-8 JSON no larger than the output cap.
    pub async fn invoke(
        &self,
        module: &Compiled,
        plugin: &str,
        tap: &str,
        input: &str,
    ) -> Result<Option<Box<RawValue>>, PluginError> {
        let budget = self.bounds.deadline_for(tap);
        // The semaphore is never closed, so acquiring only waits.
        let _slot = self.pool.slots.acquire().await.ok();
        let host = Host {
            plugin: if *module.plugin == *plugin {
                module.plugin.clone()
            } else {
                Arc::from(plugin)
            },
            tap: module
                .tap(tap)
                .map_or_else(|| Arc::from(tap), |(t, _)| t.clone()),
            limits: Limits {
                memory_bytes: self.bounds.memory_bytes,
                exceeded: false,
            },
            deadline: Instant::now() + budget,
            timed_out: false,
            sync_call: None,
            sync_cpu_start: None,
            stalled: None,
            log_lines: 0,
            wasi: module.uses_wasi.then(Wasi::default),
            sink: self.sink.get().cloned(),
            pushes: 0,
        };
        let mut store = Store::new(&self.pool.engine, host);
        store.limiter(|h| &mut h.limits);
        store.set_epoch_deadline(FIRST_YIELD_TICKS);
        store.epoch_deadline_callback(|mut ctx| {
            let h = ctx.data_mut();
            if Instant::now() >= h.deadline {
                h.timed_out = true;
                return Err(Trap::Interrupt.into());
            }
            let Some(export) = h.sync_call else {
                return Ok(UpdateDeadline::Yield(1));
            };
            // A synchronous call cannot yield: from its first deadline on,
            // count the CPU time it spends.
            let cpu = thread_cpu_time();
            match h.sync_cpu_start {
                None => h.sync_cpu_start = Some(cpu),
                Some(start) if cpu.saturating_sub(start) >= SYNC_CPU_LIMIT => {
                    h.stalled = Some(export);
                    return Err(Trap::Interrupt.into());
                }
                Some(_) => {}
            }
            Ok(UpdateDeadline::Continue(1))
        });
        let run = call(
            &mut store,
            module,
            tap,
            input,
            self.bounds.output_bytes,
            &self.instances,
        );
        // A module that imports nothing that waits cannot block in a host
        // call, so the epoch deadline alone bounds it and no timer is armed
        // (arming one per call wakes the runtime's timer thread each time).
        let ran = if module.sync_calls {
            Ok(run.await)
        } else {
            tokio::time::timeout(budget + DEADLINE_GRACE, run).await
        };
        let result = match ran {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(Failure::Plugin(e))) => Err(e),
            Ok(Err(Failure::Wasm(e))) => Err(classify(e, store.data(), duration_ms(budget))),
            Err(_) => Err(PluginError::Timeout {
                plugin: plugin.to_owned(),
                tap: tap.to_owned(),
                after_ms: duration_ms(budget),
            }),
        };
        store.data().flush_wasi_output();
        result.map_err(|e| match e {
            // Whatever the guest did after the deadline passed, the cause
            // is the deadline.
            PluginError::Trap { .. } | PluginError::WasmExecution { .. }
                if store.data().timed_out =>
            {
                PluginError::Timeout {
                    plugin: plugin.to_owned(),
                    tap: tap.to_owned(),
                    after_ms: duration_ms(budget),
                }
            }
            other => other,
        })
    }
}

/// This thread's CPU time (zero if the clock cannot be read: then only
/// the invocation's deadline stops a synchronous call).
fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Runs `f`, one synchronous call into the guest named `what`, under the
/// CPU bound of [`SYNC_CPU_LIMIT`].
fn run_sync<R>(
    store: &mut Store<Host>,
    what: &'static str,
    f: impl FnOnce(&mut Store<Host>) -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    store.set_epoch_deadline(FIRST_YIELD_TICKS);
    let h = store.data_mut();
    h.sync_call = Some(what);
    h.sync_cpu_start = None;
    let result = f(store);
    store.data_mut().sync_call = None;
    result
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn signature_is(f: &FuncType, params: &[ValType], results: &[ValType]) -> bool {
    fn same(a: &ValType, b: &ValType) -> bool {
        matches!(
            (a, b),
            (ValType::I32, ValType::I32) | (ValType::I64, ValType::I64)
        )
    }
    f.params().len() == params.len()
        && f.results().len() == results.len()
        && f.params().zip(params).all(|(a, b)| same(&a, b))
        && f.results().zip(results).all(|(a, b)| same(&a, b))
}

/// A failure inside [`call`]: already a [`PluginError`], or a wasmtime
/// error to classify once the store's bookkeeping can be read.
enum Failure {
    Plugin(PluginError),
    Wasm(wasmtime::Error),
}

impl From<wasmtime::Error> for Failure {
    fn from(e: wasmtime::Error) -> Self {
        Failure::Wasm(e)
    }
}

/// Turns a wasmtime error into the variant callers branch on. The store's
/// flags come first: a trap raised by the deadline or by the memory cap is
/// reported as such whatever the error's text.
fn classify(e: wasmtime::Error, host: &Host, after_ms: u64) -> PluginError {
    let (plugin, tap) = (host.plugin.to_string(), host.tap.to_string());
    if let Some(what) = host.stalled {
        return PluginError::Trap {
            plugin,
            tap,
            reason: format!(
                "{what} used over {} ms of CPU time without returning",
                duration_ms(SYNC_CPU_LIMIT)
            ),
        };
    }
    if host.timed_out {
        return PluginError::Timeout {
            plugin,
            tap,
            after_ms,
        };
    }
    if host.limits.exceeded {
        return PluginError::OutOfMemory {
            plugin,
            tap,
            limit_bytes: host.limits.memory_bytes,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => PluginError::StackOverflow { plugin, tap },
        Some(Trap::Interrupt) => PluginError::Timeout {
            plugin,
            tap,
            after_ms,
        },
        Some(trap) => PluginError::Trap {
            plugin,
            tap,
            reason: trap.to_string(),
        },
        None => PluginError::WasmExecution {
            plugin,
            tap,
            reason: format!("{e:#}"),
        },
    }
}

/// Keeps `trovato_plugin_instances_active` equal to the live instances.
struct LiveInstance<'a>(&'a metrics::Gauge);

impl<'a> LiveInstance<'a> {
    fn new(gauge: &'a metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for LiveInstance<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The ABI v1 call sequence: instantiate, `trovato_alloc(len)`, copy the
/// input in, `tap_x(ptr, len)`, unpack `(out_ptr << 32) | out_len`, check
/// and copy the output out, `trovato_free(out_ptr, out_len)`.
async fn call(
    store: &mut Store<Host>,
    module: &Compiled,
    tap: &str,
    input: &str,
    output_limit: usize,
    instances: &metrics::Gauge,
) -> Result<Option<Box<RawValue>>, Failure> {
    let plugin_err = |store: &Store<Host>, make: fn(String, String) -> PluginError| {
        let h = store.data();
        Failure::Plugin(make(h.plugin.to_string(), h.tap.to_string()))
    };
    let instance = if module.sync_calls {
        run_sync(store, "the start function", |s| module.pre.instantiate(s))?
    } else {
        module.pre.instantiate_async(&mut *store).await?
    };
    let _live = LiveInstance::new(instances);
    let memory = match instance.get_module_export(&mut *store, &module.memory) {
        Some(Extern::Memory(m)) => m,
        _ => {
            return Err(plugin_err(store, |plugin, _| PluginError::MissingMemory {
                plugin,
            }));
        }
    };
    let alloc = typed_export::<i32, i32>(store, instance, &module.alloc, "trovato_alloc")?;
    let tap_fn = match module.tap(tap) {
        Some((_, export)) => typed_export::<(i32, i32), i64>(store, instance, export, tap)?,
        None => instance.get_typed_func::<(i32, i32), i64>(&mut *store, tap)?,
    };

    let Ok(len) = i32::try_from(input.len()) else {
        let h = store.data();
        return Err(Failure::Plugin(PluginError::OutOfMemory {
            plugin: h.plugin.to_string(),
            tap: h.tap.to_string(),
            limit_bytes: h.limits.memory_bytes,
        }));
    };
    let ptr = if module.sync_calls {
        run_sync(store, "trovato_alloc", |s| alloc.call(s, len))?
    } else {
        alloc.call_async(&mut *store, len).await?
    };
    if memory
        .write(&mut *store, ptr as u32 as usize, input.as_bytes())
        .is_err()
    {
        let h = store.data();
        return Err(Failure::Plugin(PluginError::BadOutput {
            plugin: h.plugin.to_string(),
            tap: h.tap.to_string(),
            reason: format!(
                "trovato_alloc({len}) returned {ptr}, which is not inside linear memory"
            ),
        }));
    }
    // The tap starts with a fresh first slice.
    store.set_epoch_deadline(FIRST_YIELD_TICKS);
    let packed = tap_fn.call_async(&mut *store, (ptr, len)).await? as u64;
    if packed == 0 {
        return Ok(None);
    }
    let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    if out_len > output_limit {
        let h = store.data();
        return Err(Failure::Plugin(PluginError::OutputTooLarge {
            plugin: h.plugin.to_string(),
            tap: h.tap.to_string(),
            len: out_len,
            limit: output_limit,
        }));
    }
    let output = {
        let data = memory.data(&*store);
        let Some(bytes) = data.get(out_ptr..out_ptr + out_len) else {
            let size = data.len();
            let h = store.data();
            return Err(Failure::Plugin(PluginError::BadOutput {
                plugin: h.plugin.to_string(),
                tap: h.tap.to_string(),
                reason: format!(
                    "output {out_ptr}+{out_len} lies outside linear memory ({size} bytes)"
                ),
            }));
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Err(plugin_err(store, |plugin, tap| PluginError::InvalidUtf8 {
                plugin,
                tap,
            }));
        };
        match serde_json::from_str::<Box<RawValue>>(text) {
            Ok(v) => v,
            Err(e) => {
                let h = store.data();
                return Err(Failure::Plugin(PluginError::Serialization {
                    plugin: h.plugin.to_string(),
                    tap: h.tap.to_string(),
                    reason: format!("output is not JSON: {e}"),
                }));
            }
        }
    };
    if let Some(export) = &module.free {
        let free = typed_export::<(i32, i32), ()>(store, instance, export, "trovato_free")?;
        let args = (out_ptr as i32, out_len as i32);
        if module.sync_calls {
            run_sync(store, "trovato_free", |s| free.call(s, args))?;
        } else {
            free.call_async(&mut *store, args).await?;
        }
    }
    Ok(Some(output))
}

/// The function `export` of `instance`, with its signature checked.
fn typed_export<P, R>(
    store: &mut Store<Host>,
    instance: Instance,
    export: &ModuleExport,
    name: &str,
) -> Result<TypedFunc<P, R>, Failure>
where
    P: wasmtime::WasmParams,
    R: wasmtime::WasmResults,
{
    match instance.get_module_export(&mut *store, export) {
        Some(Extern::Func(f)) => Ok(f.typed::<P, R>(&*store)?),
        _ => Err(Failure::Wasm(wasmtime::format_err!(
            "export {name} is not a function"
        ))),
    }
}
