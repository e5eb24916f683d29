#!/usr/bin/env bash
# docs/monitoring against a real Prometheus (Debian's package): `promtool check config` and
# `check rules` pass; Prometheus, started with docs/monitoring/prometheus.yml (only the
# target and the intervals changed), scrapes a router under load on tansu; every expression
# of the Grafana dashboard and of the alert rules returns data through the HTTP query API.
#
# The load makes each alert's condition true: a plugin slower than the input (lag grows), 5%
# invalid records (dead letters), a refused upload (reload failure), and at the end the
# router stopped (not ready: its target is down). The router and the load:
#   misbehave (panics, drops and sleeps on command) -> validate (needs `id`) -> route
#
#   tests/deploy/monitoring.sh     (tests/run.sh runs it)
#
# Env: SWITCHYARD_BIN (default $CARGO_TARGET_DIR/release/switchyard), SWITCHYARD_PLUGINS_TARGET_DIR,
# SWITCHYARD_TANSU.
source "$(dirname "$0")/lib.sh"
need_packages prometheus curl

docs="$repo/docs/monitoring"
bin="${SWITCHYARD_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/switchyard}"
wasm="${SWITCHYARD_PLUGINS_TARGET_DIR:-$repo/plugins/target}/wasm32-wasip2/release"

check "promtool check config docs/monitoring/prometheus.yml" promtool check config "$docs/prometheus.yml"
check "promtool check rules docs/monitoring/switchyard-alerts.yml" promtool check rules "$docs/switchyard-alerts.yml"

# --- a router under load ----------------------------------------------------------------------
start_tansu
for t in load-in load-standard load-urgent load-errors load-dlq; do create_topic "$t" 1; done
admin_port=$(free_port)
cat >"$work/router.toml" <<EOF
[kafka]
brokers = "$broker"

[admin]
listen = "127.0.0.1:$admin_port"
state_dir = "$work/state"

[[pipeline]]
name = "load"
topics = ["load-in"]
default_route = "standard"
dead_letter_topic = "load-dlq"
workers = 1

[pipeline.routes]
standard = "load-standard"
urgent = "load-urgent"
errors = "load-errors"

[[pipeline.stage]]
name = "chaos"
plugin = "$wasm/misbehave.wasm"

[[pipeline.stage]]
name = "validate"
plugin = "$wasm/validate.wasm"
[pipeline.stage.config]
required = "id:string"

[[pipeline.stage]]
name = "route"
plugin = "$wasm/route.wasm"
EOF
SWITCHYARD_CACHE_DIR="" "$bin" run --config "$work/router.toml" >"$work/router.log" 2>&1 &
router=$!
at_exit "kill -9 $router"
admin="http://127.0.0.1:$admin_port"
if ! wait_for 60 bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' $admin/readyz) = 200 ]"; then
  fail "the router is ready"; tail -20 "$work/router.log"; finish
fi

# One second of input per round: 100 records, 60 of which make the plugin sleep 40 ms, so the
# router takes more than a second per round and the lag grows; 5 invalid, 2 panics, 3 drops.
load_round() {
  local r=$1 i
  for i in $(seq 1 60); do printf '{"key":"k%d","value":{"id":"%d-%d","do":"block","ms":40}}\n' "$i" "$r" "$i"; done
  for i in $(seq 1 20); do printf '{"key":"k%d","value":{"id":"%d-u%d","priority":"high"}}\n' "$i" "$r" "$i"; done
  for i in $(seq 1 5); do printf '{"key":"k%d","value":{"id":"%d-e%d","event_type":"error"}}\n' "$i" "$r" "$i"; done
  for i in $(seq 1 5); do printf '{"key":"k%d","value":{"no_id":true}}\n' "$i"; done
  for i in $(seq 1 2); do printf '{"key":"p%d","value":{"id":"%d-p%d","do":"panic","message":"on purpose"}}\n' "$i" "$r" "$i"; done
  for i in $(seq 1 3); do printf '{"key":"d%d","value":{"id":"%d-d%d","do":"drop"}}\n' "$i" "$r" "$i"; done
  for i in $(seq 1 5); do printf '{"key":"s%d","value":{"id":"%d-s%d"}}\n' "$i" "$r" "$i"; done
}
(
  r=0
  while true; do
    r=$((r + 1))
    load_round "$r" | produce load-in
    sleep 1
  done
) &
load=$!
at_exit "kill $load"

# --- Prometheus with the documented config ------------------------------------------------------
prom_port=$(free_port)
mkdir "$work/prometheus"
cp "$docs/switchyard-alerts.yml" "$work/prometheus/"
sed -e "s/^\(  [a-z_]*_interval:\) 15s/\1 1s/" -e "s/- 127.0.0.1:9644$/- 127.0.0.1:$admin_port/" \
  "$docs/prometheus.yml" >"$work/prometheus/prometheus.yml"
check "the test's Prometheus config differs from the documented one only in target and intervals" \
  test "$(diff "$docs/prometheus.yml" "$work/prometheus/prometheus.yml" | grep -c '^>')" -eq 3
prometheus --config.file="$work/prometheus/prometheus.yml" --storage.tsdb.path="$work/prometheus/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
at_exit "kill $!"
prom="http://127.0.0.1:$prom_port"
wait_for 60 curl -sf "$prom/-/ready" || { fail "Prometheus starts"; tail -20 "$work/prometheus.log"; finish; }
check "Prometheus scrapes the router" wait_for 30 deploy_python "$deploy_dir/promql.py" query "$prom" 'up{job="switchyard"} == 1'

# A reload that works and one that is refused (init fails), for the reload panels and alert.
sleep 5
check "an upload is accepted" "$bin" plugin push --admin "$admin" --token-file "$work/state/admin-token" \
  -p load -s route "$wasm/route.wasm"
if "$bin" plugin push --admin "$admin" --token-file "$work/state/admin-token" -p load -s chaos \
  "$wasm/misbehave.wasm" --config fail_init=refused-on-purpose >"$work/push.log" 2>&1; then
  fail "an upload whose init fails is refused"
else
  pass "an upload whose init fails is refused"
fi

# Every expression, polled until it returns data (the lag takes some rounds to pass 1000).
exprs=$(deploy_python "$deploy_dir/promql.py" exprs "$docs/grafana-dashboard.json" "$docs/switchyard-alerts.yml")
check "the dashboard has an expression for every panel" test "$(grep -c '^dashboard: ' <<<"$exprs")" -ge 15
not_ready=""
while IFS=$'\t' read -r name expr; do
  if [ "$name" = "rule: SwitchyardNotReady" ]; then not_ready=$expr; continue; fi
  if wait_for 120 deploy_python "$deploy_dir/promql.py" query "$prom" "$expr"; then pass "$name returns data"; else
    fail "$name returns data: $expr"
    deploy_python "$deploy_dir/promql.py" query "$prom" "$expr" | sed 's/^/    /' || true
  fi
done <<<"$exprs"
check "every alert rule evaluates without error" deploy_python "$deploy_dir/promql.py" rules "$prom"

# Not ready: the router stopped, its target down.
kill "$load"
kill -TERM "$router"
wait "$router" || true
if [ -n "$not_ready" ] && wait_for 60 deploy_python "$deploy_dir/promql.py" query "$prom" "$not_ready"; then
  pass "rule: SwitchyardNotReady returns data once the router is stopped"
else
  fail "rule: SwitchyardNotReady returns data once the router is stopped: $not_ready"
fi

finish
