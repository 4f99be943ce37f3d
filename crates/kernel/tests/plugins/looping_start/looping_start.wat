;; Fault fixture: the start function never returns. Instantiation runs
;; synchronously (the module imports nothing that waits), so the kernel
;; stops it by its CPU time -> PluginError::Trap naming the start function.
(module
  (memory (export "memory") 1)
  (func $start (loop $forever (br $forever)))
  (start $start)
  (func (export "trovato_alloc") (param $len i32) (result i32)
    (i32.const 1024))
  (func (export "tap_run") (param i32 i32) (result i64)
    (i64.const 0)))
