#!/usr/bin/env bash
# Builds the JavaScript example plugins into components with componentize-js (pinned),
# installed once with npm into $SWITCHYARD_TOOLS/js (default ~/.cache/switchyard/tools/js).
# componentize-js is called directly: the `jco componentize` wrapper fails on a path bug here.
#
#   examples/plugins/javascript/build.sh [OUT_DIR]    # default: target/js-plugins
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
tools="${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}"
out="${1:-${CARGO_TARGET_DIR:-$repo/target}/js-plugins}"
js="$tools/js"
version=0.23.0
componentize="$js/node_modules/.bin/componentize-js"
if [ ! -x "$componentize" ] || ! grep -q "\"version\": \"$version\"" "$js/node_modules/@bytecodealliance/componentize-js/package.json"; then
  mkdir -p "$js"
  npm install --no-audit --no-fund --prefix "$js" "@bytecodealliance/componentize-js@$version"
fi
mkdir -p "$out"
for plugin in "$here"/*/; do
  name="$(basename "$plugin")"
  # The host grants no WASI capability and does not link wasi:http: leave HTTP out.
  "$componentize" "$plugin/$name.js" --wit "$repo/wit" --world-name plugin \
    --disable http fetch-event -o "$out/$name.wasm" >/dev/null
  echo "$out/$name.wasm"
done
