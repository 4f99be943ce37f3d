;; Fault fixture: trovato_alloc never returns. It runs synchronously (the
;; module imports nothing that waits), so the kernel stops it by its CPU
;; time -> PluginError::Trap naming trovato_alloc.
(module
  (memory (export "memory") 1)
  (func (export "trovato_alloc") (param $len i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0))
  (func (export "tap_run") (param i32 i32) (result i64)
    (i64.const 0)))
