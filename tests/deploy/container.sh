#!/usr/bin/env bash
# The container image: built from the Dockerfile with podman (its `prebuilt` target, from the
# release binary the test command built), then run: the demo accounts for every event; `run`
# with a config mounted read-only routes records on a tansu broker on the host network, answers
# /readyz, runs as a non-root user, and on SIGTERM drains and exits 0 within its stop deadline.
#
#   tests/deploy/container.sh        (as root; tests/run.sh runs it)
#
# Env: SWITCHYARD_BIN (default $CARGO_TARGET_DIR/release/switchyard), SWITCHYARD_PLUGINS_TARGET_DIR,
# SWITCHYARD_TOOLS (the base image tarball is kept in its deploy/ directory), SWITCHYARD_TANSU.
source "$(dirname "$0")/lib.sh"
source "$deploy_dir/image.sh"

build_image

size=$(podman_ image inspect --format '{{.Size}}' "$image")
say "image $image: $((size / 1000000)) MB"
check "the image is under 120 MB ($((size / 1000000)) MB)" test "$size" -lt 120000000
check_eq "the image's user is the unprivileged switchyard user" "10001:10001" \
  "$(podman_ image inspect --format '{{.Config.User}}' "$image")"

# --- the demo, on its embedded broker -------------------------------------------------------
mkdir -m 0777 "$work/demo"
if podman_run --rm -v "$work/demo:/out" "$image" demo --duration 5 --summary-json /out/summary.json \
  >"$work/demo.log" 2>&1; then
  pass "demo exits 0"
else
  fail "demo exits 0"; tail -20 "$work/demo.log"
fi
summary=$work/demo/summary.json
check "demo: every event accounted for" python3 - "$summary" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["generated"] > 0, s
assert s["all_accounted"] is True, s
assert s["missing"] == 0 and s["split"] == 0, s
assert sum(s["per_topic"].values()) == s["generated"], s
EOF

# --- run: a config mounted read-only, tansu on the host network -----------------------------
start_tansu
for t in in out-standard out-urgent out-errors dlq; do create_topic "$t" 1; done
admin_port=$(free_port)
plugins=/usr/share/switchyard/plugins-target/wasm32-wasip2/release
mkdir "$work/config"
cat >"$work/config/switchyard.toml" <<EOF
[kafka]
brokers = "$broker"

[admin]
listen = "127.0.0.1:$admin_port"
# The config directory is read-only: state (uploads, the generated token) goes to the home.
state_dir = "/var/lib/switchyard/state"

[[pipeline]]
name = "orders"
topics = ["in"]
default_route = "standard"
dead_letter_topic = "dlq"

[pipeline.routes]
standard = "out-standard"
urgent = "out-urgent"
errors = "out-errors"

[[pipeline.stage]]
name = "validate"
plugin = "$plugins/validate.wasm"
[pipeline.stage.config]
required = "id:string,priority:string"

[[pipeline.stage]]
name = "route"
plugin = "$plugins/route.wasm"
EOF
chmod 0644 "$work/config/switchyard.toml"

ctr="switchyard-test-run-$$"
at_exit "podman --runtime runc --cgroup-manager=cgroupfs rm -f $ctr"
podman_run -d --name "$ctr" -v "$work/config/switchyard.toml:/etc/switchyard/switchyard.toml:ro" \
  "$image" run --config /etc/switchyard/switchyard.toml >/dev/null
ready() { [ "$(http_status "http://127.0.0.1:$admin_port/readyz")" = 200 ]; }
if wait_for 60 ready; then pass "/readyz answers 200"; else
  fail "/readyz answers 200 (last: $(http_status "http://127.0.0.1:$admin_port/readyz"))"
  podman_ logs "$ctr" 2>&1 | tail -20
fi

pid=$(podman_ inspect --format '{{.State.Pid}}' "$ctr")
check_eq "the router process runs as uid 10001" 10001 "$(ps -o uid= -p "$pid" | tr -d ' ')"

# 40 urgent, 50 standard, 5 error events, 5 invalid (no priority): each to its topic.
{
  for i in $(seq 1 40); do printf '{"key":"k%d","value":{"id":"u%d","priority":"high"}}\n' "$i" "$i"; done
  for i in $(seq 1 50); do printf '{"key":"k%d","value":{"id":"s%d","priority":"low"}}\n' "$i" "$i"; done
  for i in $(seq 1 5); do printf '{"key":"k%d","value":{"id":"e%d","priority":"low","event_type":"error"}}\n' "$i" "$i"; done
  for i in $(seq 1 5); do printf '{"key":"k%d","value":{"id":"d%d"}}\n' "$i" "$i"; done
} | produce in || fail "producing the input records"
routed() { count_is out-urgent 40 && count_is out-standard 50 && count_is out-errors 5 && count_is dlq 5; }
if wait_for 60 routed; then pass "run routes every record to its topic (40 urgent, 50 standard, 5 errors, 5 dead letters)"; else
  fail "run routes every record: urgent $(count out-urgent)/40, standard $(count out-standard)/50, errors $(count out-errors)/5, dlq $(count dlq)/5"
  podman_ logs "$ctr" 2>&1 | tail -20
fi
check "/metrics counts the records in" bash -c \
  "curl -sf http://127.0.0.1:$admin_port/metrics | grep -qx 'switchyard_records_in_total{pipeline=\"orders\"} 100'"

# SIGTERM: drain, commit, exit 0 within the stop deadline, 2 x drain_timeout_ms (10 s by
# default) + 35 s (README, "Quick start").
start=$SECONDS
podman_ kill --signal TERM "$ctr" >/dev/null
code=$(podman_ wait "$ctr")
elapsed=$((SECONDS - start))
check_eq "SIGTERM: exit code 0" 0 "$code"
check "SIGTERM: stopped within the 55 s deadline (took ${elapsed} s)" test "$elapsed" -le 55
check "SIGTERM: the log says it drained" bash -c \
  "podman --runtime runc --cgroup-manager=cgroupfs logs $ctr 2>&1 | grep -q 'SIGTERM: draining and committing'"

finish
