;; Test fixture: implements the three item write taps; each accepts the
;; item JSON and returns no output.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 4096))
  (func (export "trovato_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $p))
  (func (export "tap_item_insert") (param i32 i32) (result i64) (i64.const 0))
  (func (export "tap_item_update") (param i32 i32) (result i64) (i64.const 0))
  (func (export "tap_item_delete") (param i32 i32) (result i64) (i64.const 0)))
