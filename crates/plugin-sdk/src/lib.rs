//! Write Trovato plugins in Rust.
//!
//! A tap is an ordinary function from a deserializable input to a
//! [`TapReturn`]; the [`taps!`] macro exports it under the plugin ABI v1
//! (see `docs/plugins.md` in the Trovato repository) together with the
//! `trovato_alloc` and `trovato_free` exports the kernel needs:
//!
//! ```ignore
//! use serde::Deserialize;
//! use trovato_plugin_sdk::{info, taps};
//!
//! #[derive(Deserialize)]
//! struct Cron { timestamp: i64 }
//!
//! fn cron(input: Cron) {
//!     info!("cron ran at {}", input.timestamp);
//! }
//!
//! taps! { tap_cron => cron }
//! ```
//!
//! Build plugins for `wasm32-unknown-unknown` as a `cdylib`. On any other
//! target the crate still compiles (so plugin logic can be unit-tested on
//! the host); logging then goes to stderr.

use std::fmt::Display;

pub use serde;
pub use serde_json;

/// What a tap function may return.
///
/// - `()`: no output;
/// - [`serde_json::Value`] or [`Json`]: the value as the output JSON;
/// - `Result<T, E>`: `Ok` as the output JSON; `Err` is logged at error
///   level and the invocation traps, which the kernel reports as a
///   `PluginError::Trap`.
pub trait TapReturn {
    /// The output JSON, `None` for "no output", or the error message.
    fn into_output(self) -> Result<Option<Vec<u8>>, String>;
}

impl TapReturn for () {
    fn into_output(self) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
}

impl TapReturn for serde_json::Value {
    fn into_output(self) -> Result<Option<Vec<u8>>, String> {
        serde_json::to_vec(&self)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// Wraps any serializable value as a tap's output.
pub struct Json<T>(pub T);

impl<T: serde::Serialize> TapReturn for Json<T> {
    fn into_output(self) -> Result<Option<Vec<u8>>, String> {
        serde_json::to_vec(&self.0)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

impl<T: serde::Serialize, E: Display> TapReturn for Result<T, E> {
    fn into_output(self) -> Result<Option<Vec<u8>>, String> {
        match self {
            Ok(v) => serde_json::to_vec(&v).map(Some).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Logging through the kernel's structured log (host function
/// `trovato::log`); each line carries the plugin's and the tap's name.
pub mod log {
    /// Severity, as the ABI numbers it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(i32)]
    pub enum Level {
        Error = 0,
        Warn = 1,
        Info = 2,
        Debug = 3,
        Trace = 4,
    }

    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "trovato")]
    unsafe extern "C" {
        #[link_name = "log"]
        fn host_log(level: i32, ptr: i32, len: i32);
    }

    /// Writes `message` at `level`.
    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: the pointer and length describe `message`, which outlives
        // the call; the host only reads that range.
        unsafe {
            host_log(level as i32, message.as_ptr() as i32, message.len() as i32);
        }
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("[{level:?}] {message}");
    }

    pub fn error(message: &str) {
        log(Level::Error, message);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }
}

/// Pushing jobs to the plugin's queues (host function
/// `trovato::queue_push`), from any tap. A plugin may use the queue named
/// after it and any `<plugin>.<name>`; the kernel delivers each job to the
/// plugin's `tap_queue_worker`.
///
/// ```ignore
/// trovato_plugin_sdk::queue::push("digest.outbox", &serde_json::json!({"item": id}))?;
/// ```
pub mod queue {
    /// Why a push was refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum PushError {
        /// The name is invalid or not the plugin's.
        BadQueue,
        /// The payload is not JSON, or larger than a job may carry (1 MiB).
        BadPayload,
        /// The queue backend is unavailable (or the kernel runs no queues,
        /// as under `trovato plugin invoke`).
        Unavailable,
        /// This invocation already pushed its 1000 jobs.
        TooMany,
        /// A code this SDK does not know.
        Other(i32),
    }

    impl std::fmt::Display for PushError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                PushError::BadQueue => f.write_str("invalid queue name, or not the plugin's queue"),
                PushError::BadPayload => f.write_str("payload is not JSON or too large"),
                PushError::Unavailable => f.write_str("the queue is unavailable"),
                PushError::TooMany => f.write_str("too many pushes in one invocation"),
                PushError::Other(code) => write!(f, "queue_push failed with code {code}"),
            }
        }
    }

    impl std::error::Error for PushError {}

    /// The ABI's result codes.
    pub fn from_code(code: i32) -> Result<(), PushError> {
        match code {
            0 => Ok(()),
            1 => Err(PushError::BadQueue),
            2 => Err(PushError::BadPayload),
            3 => Err(PushError::Unavailable),
            4 => Err(PushError::TooMany),
            other => Err(PushError::Other(other)),
        }
    }

    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "trovato")]
    unsafe extern "C" {
        #[link_name = "queue_push"]
        fn host_queue_push(
            queue_ptr: i32,
            queue_len: i32,
            payload_ptr: i32,
            payload_len: i32,
        ) -> i32;
    }

    /// Enqueues `payload` (serialized as JSON) on `queue`.
    pub fn push<T: serde::Serialize + ?Sized>(queue: &str, payload: &T) -> Result<(), PushError> {
        let json = serde_json::to_vec(payload).map_err(|_| PushError::BadPayload)?;
        push_json(queue, &json)
    }

    /// Enqueues `json`, which must be JSON, on `queue`.
    pub fn push_json(queue: &str, json: &[u8]) -> Result<(), PushError> {
        #[cfg(target_arch = "wasm32")]
        {
            // SAFETY: both pointers and lengths describe live buffers that
            // outlive the call; the host only reads those ranges.
            let code = unsafe {
                host_queue_push(
                    queue.as_ptr() as i32,
                    queue.len() as i32,
                    json.as_ptr() as i32,
                    json.len() as i32,
                )
            };
            from_code(code)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            // Natively (unit tests) there is no kernel to push to.
            let _ = (queue, json);
            Err(PushError::Unavailable)
        }
    }
}

/// `error!("...", args)`: formats and logs at error level.
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::error(&::std::format!($($t)*)) }; }
/// `warn!("...", args)`: formats and logs at warn level.
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::warn(&::std::format!($($t)*)) }; }
/// `info!("...", args)`: formats and logs at info level.
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::info(&::std::format!($($t)*)) }; }
/// `debug!("...", args)`: formats and logs at debug level.
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::debug(&::std::format!($($t)*)) }; }

/// Exports taps under ABI v1, plus `trovato_alloc` and `trovato_free`.
/// Use it once per plugin:
///
/// ```ignore
/// trovato_plugin_sdk::taps! {
///     tap_cron => cron,
///     tap_item_update_index => update_index,
/// }
/// ```
#[macro_export]
macro_rules! taps {
    ($($export:ident => $function:path),+ $(,)?) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn trovato_alloc(len: i32) -> i32 {
            $crate::__abi::alloc(len)
        }

        /// # Safety
        /// `ptr` and `len` must describe a buffer from `trovato_alloc` or a
        /// tap's output, not yet freed.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn trovato_free(ptr: i32, len: i32) {
            // SAFETY: forwarded contract.
            unsafe { $crate::__abi::free(ptr, len) }
        }

        $(
            /// # Safety
            /// Called by the kernel with a buffer from `trovato_alloc`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $export(ptr: i32, len: i32) -> i64 {
                // SAFETY: forwarded contract.
                unsafe { $crate::__abi::run(ptr, len, $function) }
            }
        )+
    };
}

/// A bump allocator for plugins: the kernel runs every invocation in a
/// fresh instance, so memory never needs to be reused across invocations,
/// and a bump pointer is the cheapest allocator there is. Freeing the most
/// recent allocation (and growing it in place) is supported; anything else
/// is reclaimed when the instance is dropped. A plugin that allocates and
/// frees a lot within one invocation should keep the default allocator.
///
/// ```ignore
/// #[global_allocator]
/// static ALLOC: trovato_plugin_sdk::FreshInstanceAllocator =
///     trovato_plugin_sdk::FreshInstanceAllocator;
/// ```
#[cfg(target_arch = "wasm32")]
pub struct FreshInstanceAllocator;

#[cfg(target_arch = "wasm32")]
mod bump {
    use core::alloc::{GlobalAlloc, Layout};
    use core::sync::atomic::{AtomicUsize, Ordering};

    const PAGE: usize = 65536;

    /// The next free byte; 0 until the first allocation.
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" {
        /// Where the linker put the start of the heap.
        static __heap_base: u8;
    }

    fn next() -> usize {
        match NEXT.load(Ordering::Relaxed) {
            0 => &raw const __heap_base as usize,
            n => n,
        }
    }

    /// Makes `[.., end)` addressable; false when memory cannot grow.
    fn ensure(end: usize) -> bool {
        let size = core::arch::wasm32::memory_size(0) * PAGE;
        if end <= size {
            return true;
        }
        let pages = (end - size).div_ceil(PAGE);
        core::arch::wasm32::memory_grow(0, pages) != usize::MAX
    }

    // SAFETY: hands out disjoint, suitably aligned ranges of linear
    // memory; wasm32-unknown-unknown instances are single-threaded.
    unsafe impl GlobalAlloc for super::FreshInstanceAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let start = next().next_multiple_of(layout.align());
            let Some(end) = start.checked_add(layout.size()) else {
                return core::ptr::null_mut();
            };
            if !ensure(end) {
                return core::ptr::null_mut();
            }
            NEXT.store(end, Ordering::Relaxed);
            start as *mut u8
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // Only the most recent allocation can be given back.
            let start = ptr as usize;
            if start + layout.size() == next() {
                NEXT.store(start, Ordering::Relaxed);
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let start = ptr as usize;
            if start + layout.size() == next() {
                // The most recent allocation grows or shrinks in place.
                let Some(end) = start.checked_add(new_size) else {
                    return core::ptr::null_mut();
                };
                if !ensure(end) {
                    return core::ptr::null_mut();
                }
                NEXT.store(end, Ordering::Relaxed);
                return ptr;
            }
            // SAFETY: the layout is valid (size checked by the caller's
            // contract); copy the smaller of the two sizes.
            unsafe {
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                }
                new
            }
        }
    }
}

/// The ABI glue the [`taps!`] macro expands to. Not a stable interface.
#[doc(hidden)]
pub mod __abi {
    use std::alloc::{Layout, alloc as raw_alloc, dealloc};

    use super::TapReturn;

    /// Allocates `len` bytes with alignment 1; a zero length gets a
    /// dangling non-null pointer.
    pub fn alloc(len: i32) -> i32 {
        let len = len.max(0) as usize;
        if len == 0 {
            return 1;
        }
        match Layout::from_size_align(len, 1) {
            // SAFETY: the layout has a non-zero size.
            Ok(layout) => {
                let ptr = unsafe { raw_alloc(layout) };
                if ptr.is_null() {
                    std::alloc::handle_alloc_error(layout);
                }
                ptr as usize as i32
            }
            Err(_) => 0,
        }
    }

    /// # Safety
    /// `ptr`/`len` must come from [`alloc`] (or a tap's output, allocated
    /// the same way) and not have been freed.
    pub unsafe fn free(ptr: i32, len: i32) {
        let len = len.max(0) as usize;
        if len == 0 || ptr == 0 {
            return;
        }
        if let Ok(layout) = Layout::from_size_align(len, 1) {
            // SAFETY: per the contract, allocated with this layout.
            unsafe { dealloc(ptr as u32 as usize as *mut u8, layout) }
        }
    }

    /// Logs the panic message through the host before the trap, which
    /// would otherwise lose it.
    fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log::error(&format!("plugin panicked: {info}"));
            }));
        });
    }

    fn fail(message: &str) -> ! {
        crate::log::error(message);
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        panic!("{message}");
    }

    /// Deserializes the input, calls `f`, and returns the packed output.
    ///
    /// # Safety
    /// `ptr`/`len` must describe a buffer from [`alloc`]; it is freed here.
    pub unsafe fn run<I, R, F>(ptr: i32, len: i32, f: F) -> i64
    where
        I: serde::de::DeserializeOwned,
        R: TapReturn,
        F: FnOnce(I) -> R,
    {
        install_panic_hook();
        let len = len.max(0) as usize;
        let input: Box<[u8]> = if len == 0 {
            Box::new([])
        } else {
            // SAFETY: allocated by `alloc(len)` with layout (len, 1), which
            // is the layout of a boxed byte slice of that length.
            unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    ptr as u32 as usize as *mut u8,
                    len,
                ))
            }
        };
        let parsed: I = match serde_json::from_slice(&input) {
            Ok(v) => v,
            Err(e) => fail(&format!("cannot deserialize the tap input: {e}")),
        };
        drop(input);
        match f(parsed).into_output() {
            Ok(None) => 0,
            Ok(Some(bytes)) => {
                let out = bytes.into_boxed_slice();
                let out_len = out.len() as u64;
                let out_ptr = Box::into_raw(out) as *mut u8 as usize as u64;
                ((out_ptr << 32) | out_len) as i64
            }
            Err(message) => fail(&message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_output_or_errors() {
        let ok: Result<u32, String> = Ok(3);
        assert_eq!(ok.into_output(), Ok(Some(b"3".to_vec())));
        let err: Result<u32, String> = Err("no".into());
        assert_eq!(err.into_output(), Err("no".into()));
        assert_eq!(().into_output(), Ok(None));
        assert_eq!(Json(vec![1, 2]).into_output(), Ok(Some(b"[1,2]".to_vec())));
    }
}
