#!/usr/bin/env bash
# Builds the Python example plugins into components with componentize-py (pinned), installed
# once into a virtualenv under $SWITCHYARD_TOOLS (default ~/.cache/switchyard/tools).
#
#   examples/plugins/python/build.sh [OUT_DIR]    # default: target/python-plugins
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
tools="${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}"
out="${1:-${CARGO_TARGET_DIR:-$repo/target}/python-plugins}"
venv="$tools/py"
if [ ! -x "$venv/bin/componentize-py" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet componentize-py==0.25.1
fi
mkdir -p "$out"
for plugin in "$here"/*/; do
  name="$(basename "$plugin")"
  # The contract each plugin implements: the stateful ones are listed, the rest are 0.1.0.
  case "$name" in
    window) wit="$repo/wit/stateful" world=stateful-plugin ;;
    *) wit="$repo/wit" world=plugin ;;
  esac
  (cd "$plugin" && "$venv/bin/componentize-py" -d "$wit" -w "$world" componentize app -o "$out/$name.wasm")
  echo "$out/$name.wasm"
done
