# WASM tap invocation through a fresh instance against the same JSON
# transformation in native Rust (crates/kernel/benches/plugin_tap.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-plugins >&2
cargo bench -q -p trovato-kernel --bench plugin_tap 2>/dev/null | grep '^|' | grep -v -e '^| measure' -e '^|---' | sed 's/^| /| WASM tap, 4 KB JSON, fresh instance: /'
