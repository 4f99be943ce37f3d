;; Isolation fixture: increments a byte of memory and a global, and returns
;; the byte plus the global's old value as one JSON digit. A fresh instance
;; always answers 1; any state surviving an invocation makes it larger.
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "0")
  (global $calls (mut i32) (i32.const 0))
  (global $next (mut i32) (i32.const 4096))
  ;; A bump allocator: enough for fixtures.
  (func (export "trovato_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $p))
  (func (export "tap_run") (param i32 i32) (result i64)
    (i32.store8 (i32.const 16)
      (i32.add
        (i32.add (i32.load8_u (i32.const 16)) (i32.const 1))
        (global.get $calls)))
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    ;; (16 << 32) | 1
    (i64.const 68719476737)))
