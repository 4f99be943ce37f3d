;; WASI fixture: writes a line to stdout with fd_write, then tries
;; path_open on fd 3 (no directory is preopened, so it fails) and returns
;; the errno as JSON.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello from wasi\0a")
  (data (i32.const 200) "/etc/passwd")
  (global $next (mut i32) (i32.const 4096))
  ;; A bump allocator: enough for fixtures.
  (func (export "trovato_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $p))
  (func (export "tap_run") (param i32 i32) (result i64)
    (local $errno i32)
    ;; iovec at 0: { buf = 100, len = 16 }
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $errno
      (call $path_open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 11)
        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 300)))
    ;; errno as two ASCII digits at 400 (EBADF is 8 -> "08")
    (i32.store8 (i32.const 400) (i32.add (i32.const 48) (i32.div_u (local.get $errno) (i32.const 10))))
    (i32.store8 (i32.const 401) (i32.add (i32.const 48) (i32.rem_u (local.get $errno) (i32.const 10))))
    ;; output "\"NN\"" built at 399..403
    (i32.store8 (i32.const 399) (i32.const 34))
    (i32.store8 (i32.const 402) (i32.const 34))
    ;; (399 << 32) | 4
    (i64.const 1713691951108)))
