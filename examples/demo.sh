#!/usr/bin/env bash
# The one-command demo: sets up what it needs (the wasm32-wasip2 target, the example plugins,
# the switchyard binary) and runs `switchyard demo` on an embedded broker.
#
#   examples/demo.sh                          # 2000 events/s for 30 s
#   examples/demo.sh --rate 5000 --duration 60
#   examples/demo.sh --brokers kafka:9092     # a real cluster instead of the embedded broker
#
# Arguments go to `switchyard demo` (see `switchyard demo --help`). Needs rustup and cargo, a C
# compiler and make (librdkafka is built from source). The first run compiles for a few
# minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
plugins_target="${SWITCHYARD_PLUGINS_TARGET_DIR:-$PWD/plugins/target}"
echo "==> building the example plugins (wasm32-wasip2)" >&2
(cd plugins && CARGO_TARGET_DIR="$plugins_target" cargo build --quiet --release --target wasm32-wasip2)
echo "==> building switchyard" >&2
cargo build --quiet --release -p switchyard
target="${CARGO_TARGET_DIR:-$PWD/target}"
exec "$target/release/switchyard" demo --plugins "$plugins_target/wasm32-wasip2/release" "$@"
