;; Fault fixture: grows linear memory 1 MiB at a time, ignoring failure
;; -> PluginError::OutOfMemory (the limiter traps the growth past the cap).
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
    (loop $grow
      (drop (memory.grow (i32.const 16)))
      (br $grow))
    (i64.const 0)))
