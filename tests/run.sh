#!/usr/bin/env bash
# The test command: sets up what the tests need, then runs lints and every test.
#
#   tests/run.sh
#
# Needs rustup and cargo, python3 (with venv) and node/npm. Installs the wasm32-wasip2 target
# and clippy/rustfmt if missing, the tansu broker the Kafka tests start (built once from
# crates.io into $SWITCHYARD_TOOLS, default ~/.cache/switchyard/tools; the first build takes
# about 15 minutes on 2 cores), and the pinned Python and JavaScript plugin toolchains (pip and
# npm, into the same directory; weval, for JavaScript ahead of time, with cargo: 16 minutes on
# 2 busy cores the first time). The deployment tests (tests/deploy) need root: they install
# Debian packages and run containers with podman.
# CARGO_TARGET_DIR and SWITCHYARD_PLUGINS_TARGET_DIR are honoured (CI points them at a cache).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm32-wasip2 target, rustfmt, clippy"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
for component in rustfmt clippy; do
  rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done

step "tansu (the Kafka-protocol broker the tests start)"
tools="${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}"
export SWITCHYARD_TANSU="$tools/bin/tansu"
if [ ! -x "$SWITCHYARD_TANSU" ]; then
  CARGO_TARGET_DIR="$tools/build" cargo install tansu --version 0.6.0 --locked --features dynostore --root "$tools"
  rm -rf "$tools/build"
fi
"$SWITCHYARD_TANSU" --version

# The plugins are their own workspace (target wasm32-wasip2) with their own target directory.
export SWITCHYARD_PLUGINS_TARGET_DIR="${SWITCHYARD_PLUGINS_TARGET_DIR:-$PWD/plugins/target}"
plugins_cargo() { (cd plugins && CARGO_TARGET_DIR="$SWITCHYARD_PLUGINS_TARGET_DIR" cargo "$@"); }

step "format"
cargo fmt --all --check
plugins_cargo fmt --all --check

step "build the example plugins (wasm32-wasip2, release)"
plugins_cargo build --release --target wasm32-wasip2

step "plugins in Python and JavaScript (componentize-py 0.25.1, componentize-js 0.23.0, weval 0.5.0; installed once into \$SWITCHYARD_TOOLS)"
export SWITCHYARD_TOOLS="$tools"
bash examples/plugins/python/build.sh "$SWITCHYARD_PLUGINS_TARGET_DIR/python"
bash examples/plugins/javascript/build.sh "$SWITCHYARD_PLUGINS_TARGET_DIR/javascript"

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
plugins_cargo clippy --all-targets -- -D warnings
plugins_cargo clippy --target wasm32-wasip2 -- -D warnings

# Test output is also kept, to add up the counts of every run at the end.
results=$(mktemp)
trap 'rm -f "$results"' EXIT

step "plugin unit tests (native)"
plugins_cargo test 2>&1 | tee -a "$results"

step "workspace tests"
cargo test --workspace 2>&1 | tee -a "$results"

# The deployment tests run the router as users get it: a release build (into CARGO_TARGET_DIR,
# so CI keeps it in its cache and rebuilds only what changed).
step "release build of the router (for the container image and the deployment tests)"
cargo build --release -p switchyard
export SWITCHYARD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/switchyard"

# Each script installs the Debian packages it needs when missing (podman, runc, mmdebstrap,
# prometheus, kubectl) and its Python tools once into $SWITCHYARD_TOOLS/deploy; all three run
# even if one fails, and the run fails after the summary.
deploy_failed=0
for t in container monitoring kubernetes; do
  step "deployment: $t (tests/deploy/$t.sh)"
  bash "tests/deploy/$t.sh" 2>&1 | tee -a "$results" || deploy_failed=1
done

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$results"
exit "$deploy_failed"
