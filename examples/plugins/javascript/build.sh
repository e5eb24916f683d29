#!/usr/bin/env bash
# Builds the JavaScript example plugins into components with componentize-js (pinned),
# installed once with npm into $SWITCHYARD_TOOLS/js (default ~/.cache/switchyard/tools/js).
# componentize-js is called directly: the `jco componentize` wrapper fails on a path bug here.
#
# The components are compiled ahead of time (`--aot`): weval specializes SpiderMonkey's
# interpreter to the plugin's code, which made `validate` about 1.7 times faster (`route`: less
# than the noise of the machine measured; BENCHMARKS.md, "Plugins per language"). weval's npm
# package downloads its binary from GitHub, so weval is built once from crates.io instead
# (pinned, the version componentize-js expects; 16 minutes on 2 busy cores) into
# $SWITCHYARD_TOOLS/weval.
# SWITCHYARD_JS_AOT=0 builds interpreted components and needs no weval.
#
#   examples/plugins/javascript/build.sh [OUT_DIR]    # default: target/js-plugins
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
tools="${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}"
out="${1:-${CARGO_TARGET_DIR:-$repo/target}/js-plugins}"
js="$tools/js"
version=0.23.0
weval_version=0.5.0
componentize="$js/node_modules/.bin/componentize-js"
if [ ! -x "$componentize" ] || ! grep -q "\"version\": \"$version\"" "$js/node_modules/@bytecodealliance/componentize-js/package.json"; then
  mkdir -p "$js"
  npm install --no-audit --no-fund --prefix "$js" "@bytecodealliance/componentize-js@$version"
fi
# The host grants no WASI capability and does not link wasi:http: leave HTTP out.
options=(--disable http fetch-event)
if [ "${SWITCHYARD_JS_AOT:-1}" != 0 ]; then
  weval="$tools/weval/bin/weval"
  if [ ! -x "$weval" ] || [ "$("$weval" --version)" != "weval $weval_version" ]; then
    CARGO_TARGET_DIR="$tools/weval-build" cargo install weval --version "$weval_version" --locked --root "$tools/weval"
    rm -rf "$tools/weval-build"
  fi
  options+=(--aot --weval-bin "$weval")
fi
mkdir -p "$out"
for plugin in "$here"/*/; do
  name="$(basename "$plugin")"
  "$componentize" "$plugin/$name.js" --wit "$repo/wit" --world-name plugin "${options[@]}" \
    -o "$out/$name.wasm" >/dev/null
  echo "$out/$name.wasm"
done
