;; Fault fixture: returns 5 MiB that do lie inside its memory (81 pages),
;; past the default 4 MiB output cap -> PluginError::OutputTooLarge.
(module
  (memory (export "memory") 81)
  (global $next (mut i32) (i32.const 4096))
  ;; A bump allocator: enough for fixtures.
  (func (export "trovato_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $p))
  (func (export "tap_run") (param i32 i32) (result i64)
    ;; (0 << 32) | 5242880
    (i64.const 5242880)))
