# Shared by the deployment tests (sourced, not run): checks that count, cleanup on exit,
# packages installed when missing, podman as it works here, a tansu broker on a free port.
#
# Each test script sources this, calls `check`/`fail` for every assertion and `finish` at the
# end, which prints `test result: ok. N passed; M failed` (tests/run.sh adds those lines up)
# and exits non-zero if anything failed.

set -euo pipefail

deploy_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$deploy_dir/../.." && pwd)"
passed=0
failed=0

# The scratch directory of this script; everything it starts is stopped on exit.
work="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-deploy.XXXXXX")"
cleanups=()
on_exit() {
  local i
  for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do
    eval "${cleanups[i]}" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap on_exit EXIT
# Runs a command when the script exits (last registered, first run).
at_exit() { cleanups+=("$1"); }

say() { printf '%s\n' "$*"; }
pass() { passed=$((passed + 1)); say "ok: $1"; }
fail() { failed=$((failed + 1)); say "FAILED: $1"; }
# check NAME COMMAND...: passes if the command succeeds; its output is shown when it fails.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name"; say "$out" | tail -20 | sed 's/^/    /'; fi
}
# check_eq NAME EXPECTED ACTUAL
check_eq() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: expected '$2', got '$3'"; fi
}
finish() {
  local status=ok
  [ "$failed" -eq 0 ] || status=FAILED
  say "test result: $status. $passed passed; $failed failed"
  [ "$failed" -eq 0 ]
}

# Installs Debian packages that are not installed yet.
need_packages() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Podman as it runs on the CI machines: crun cannot set up cgroups there, runc with cgroupfs
# can; the default open-files limit is above what the runtime may set, so it is given.
podman_() { podman --runtime runc --cgroup-manager=cgroupfs "$@"; }
podman_run() { podman_ run --network host --ulimit nofile=1024:20000 --ulimit nproc=1024:1024 "$@"; }

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for SECONDS COMMAND...: polls until the command succeeds; fails after SECONDS. A bound
# on waiting for something to start, not a timed assertion.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

# Starts tansu (in memory) on a free port; sets $broker (host:port). Stopped on exit.
start_tansu() {
  local tansu="${SWITCHYARD_TANSU:-${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}/bin/tansu}"
  local port
  port=$(free_port)
  "$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
  local pid=$!
  at_exit "kill $pid"
  broker="127.0.0.1:$port"
  tansu_bin=$tansu
  wait_for 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || { say "tansu did not start:"; cat "$work/tansu.log"; return 1; }
}

# create_topic NAME PARTITIONS
create_topic() { "$tansu_bin" topic create "$1" --partitions "$2" --broker "tcp://$broker" >/dev/null; }

# A venv of the tests' Python tools under $SWITCHYARD_TOOLS, made once: confluent-kafka (the
# Kafka client, tests/deploy/kafka.py), kubernetes-validate (Kubernetes schemas, offline) and
# PyYAML (the alert rules and manifests read by promql.py and k8s.py).
deploy_python() {
  local venv="${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}/deploy/venv"
  if [ ! -f "$venv/.installed-1" ]; then
    need_packages python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet confluent-kafka==2.6.1 kubernetes-validate==1.37.0 pyyaml==6.0.2
    touch "$venv/.installed-1"
  fi
  "$venv/bin/python" "$@"
}
kafka_client() { deploy_python "$deploy_dir/kafka.py" "$@"; }

# produce TOPIC < JSON lines {"key": .., "value": {..}}
produce() { kafka_client produce "$broker" "$1"; }

# count TOPIC: records in the topic now.
count() { kafka_client count "$broker" "$1" 2>/dev/null || echo 0; }

# count_is TOPIC N: the topic holds exactly N records.
count_is() { [ "$(count "$1")" -eq "$2" ]; }

# http_status URL [curl args...]: the HTTP status code (000 if nothing answered).
http_status() { curl -s -o /dev/null -w '%{http_code}' "$@" || true; }

# Made now, before any script starts a background job that uses it (two would race to make it).
deploy_python -c ''
