;; Fault fixture: no trovato_alloc -> PluginError::MissingExport at load.
(module
  (memory (export "memory") 1)
  (func (export "tap_run") (param i32 i32) (result i64)
    (i64.const 0)))
