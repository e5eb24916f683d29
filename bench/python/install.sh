#!/usr/bin/env bash
# Installs the Python routers' pinned packages (requirements.txt beside this script) into a
# venv at $SWITCHYARD_TOOLS/bench-python/venv (default ~/.cache/switchyard/tools), made again
# only when it is missing or the pins changed, and prints the venv's python on stdout (pip's
# output goes to stderr). The throughput and side-by-side latency benches run it before
# starting a Python path; it needs python3 (3.9 or later, with venv) and PyPI the first time.
#
#   bash bench/python/install.sh            # prints e.g. ~/.cache/switchyard/tools/bench-python/venv/bin/python
#   PYTHON=python3.12 bash bench/python/install.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}"
dir="$tools/bench-python"
venv="$dir/venv"
requirements="$here/requirements.txt"
mkdir -p "$dir"
# One installer at a time (two benches started together would both build the venv).
exec 9>"$dir/.lock"
flock 9
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null || true)" != "$want" ]; then
  {
    echo "installing the bench's Python routers into $venv (pins: $requirements)"
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    # The routers import what they need: a broken install fails here, not in the middle of a bench.
    "$venv/bin/python" -c 'import confluent_kafka, quixstreams'
  } >&2
  echo "$want" >"$venv/.requirements.sha256"
fi
echo "$venv/bin/python"
