;; Fault fixture: output at 0xFFFF0000 (memory is one 64 KiB page)
;; -> PluginError::BadOutput.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 4096))
  ;; A bump allocator: enough for fixtures.
  (func (export "trovato_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $p))
  (func (export "tap_run") (param i32 i32) (result i64)
    ;; (0xFFFF0000 << 32) | 16
    (i64.const -281474976710640)))
