#!/usr/bin/env bash
# deploy/kubernetes, offline (no cluster here): kubectl builds every object
# (`kubectl create --dry-run=client -k`, against a stand-in that answers only API discovery,
# which kubectl needs even with --validate=false), kubernetes-validate checks them against the
# Kubernetes 1.32 schemas, unknown fields refused; the manifests agree with each other and with
# the binary (admin port = its default, probe paths, grace period > the stop deadline its
# `run --help` states, every ${VAR} in the Secret); and the image runs the ConfigMap's config
# as the Deployment would (its args, the Secret as environment, a read-only root and config,
# the home writable, no network): `check` passes, /healthz, /readyz and /metrics answer on the
# manifest's port, the Secret's admin token is accepted and no token is refused, and SIGTERM
# ends it within the grace period.
#
#   tests/deploy/kubernetes.sh     (tests/run.sh runs it)
source "$(dirname "$0")/lib.sh"
source "$deploy_dir/image.sh"
need_packages kubectl curl util-linux

k8s="$repo/deploy/kubernetes"
bin="${SWITCHYARD_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/switchyard}"
py() { deploy_python "$deploy_dir/k8s.py" "$@"; }

# --- kubectl, offline ---------------------------------------------------------------------------
check "kubectl kustomize builds the four objects" bash -c \
  "[ \$(kubectl kustomize '$k8s' | grep -c '^kind: \(ConfigMap\|Secret\|Deployment\|PodDisruptionBudget\)$') -eq 4 ]"
api_port=$(free_port)
# Started as the venv's python itself (not through the deploy_python function, whose
# background subshell would be killed while the server lived on) and with its output in a
# file: a server left behind must not hold the test command's output pipe open.
deploy_python -c pass
"${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}/deploy/venv/bin/python" \
  "$deploy_dir/k8s.py" discovery "$api_port" >"$work/discovery.log" 2>&1 &
at_exit "kill $!"
wait_for 20 curl -sf "http://127.0.0.1:$api_port/api"
export KUBECONFIG="$work/kubeconfig"  # none of the user's clusters
if kubectl --server "http://127.0.0.1:$api_port" create --dry-run=client --validate=false -k "$k8s" -o name \
  >"$work/created" 2>&1; then
  check_eq "kubectl create --dry-run=client -k deploy/kubernetes" \
    "configmap/switchyard-config deployment.apps/switchyard poddisruptionbudget.policy/switchyard secret/switchyard-secrets" \
    "$(sort "$work/created" | tr '\n' ' ' | sed 's/ $//')"
else
  fail "kubectl create --dry-run=client -k deploy/kubernetes"; cat "$work/created"
fi
for f in configmap secret deployment pdb; do
  check "kubernetes-validate --strict (1.32): $f.yaml" \
    deploy_python -m kubernetes_validate --strict --no-warn -k 1.32.0 "$k8s/$f.yaml"
done

# --- the manifests against each other and the binary --------------------------------------------
# The admin API's default address, as `demo --admin-listen` states it (the same constant as
# admin.listen's default), and the slack of the stop deadline, as `run --help` states it.
admin_default=$("$bin" demo --help | tr -s ' \n' ' ' | grep -o 'Admin API address \[default: [^]]*\]' | grep -o '[0-9.]*:[0-9][0-9]*' || true)
stop_slack=$("$bin" run --help | tr -s ' \n' ' ' | grep -o 'drain_timeout_ms + [0-9]* s' | grep -o '[0-9][0-9]*' || true)
image_user=10001:10001
if [ -z "$admin_default" ] || [ -z "$stop_slack" ]; then
  fail "the binary states its admin default ('$admin_default') and stop slack ('$stop_slack')"; finish
fi
pass "the binary states its admin default ($admin_default) and stop slack (${stop_slack} s)"
while IFS=$'\t' read -r verdict what why; do
  if [ "$verdict" = PASS ]; then pass "$what"; else fail "$what: $why"; fi
done < <(py agree "$k8s" "$admin_default" "$stop_slack" "$image_user")

# --- the image runs the manifests' config as the Deployment would -------------------------------
build_image
check_eq "the image's user is the Deployment's runAsUser" "$image_user" \
  "$(podman_ image inspect --format '{{.Config.User}}' "$image")"
config_dir=$(py get "$k8s" config-dir)
home=$(py get "$k8s" home)
port=$(py get "$k8s" port)
mapfile -t args < <(py get "$k8s" args)
mkdir -p "$work/config" "$work/home"
chmod 0777 "$work/home"  # an emptyDir is world-writable
py config "$k8s" >"$work/config/switchyard.toml"
py env "$k8s" >"$work/env"
token=$(sed -n 's/^SWITCHYARD_ADMIN_TOKEN=//p' "$work/env")
as_deployed=(--read-only --env-file "$work/env" -v "$work/config:$config_dir:ro" -v "$work/home:$home")

check "switchyard check: the ConfigMap's config, with the Secret's environment, in the image" \
  podman_run --rm "${as_deployed[@]}" "$image" check --config "${args[2]}"

ctr="switchyard-test-k8s-$$"
at_exit "podman --runtime runc --cgroup-manager=cgroupfs rm -f $ctr"
# No network: the brokers do not answer, and the router starts its admin API anyway after 10 s.
podman_ run -d --name "$ctr" --network none --ulimit nofile=1024:20000 --ulimit nproc=1024:1024 \
  "${as_deployed[@]}" "$image" "${args[@]}" >/dev/null
pid=$(podman_ inspect --format '{{.State.Pid}}' "$ctr")
# curl from the host, inside the container's network namespace (as the kubelet sees the pod).
in_pod() { nsenter -t "$pid" -n curl -s -o /dev/null -w '%{http_code}' "$@" || true; }
liveness=$(py get "$k8s" liveness)
readiness=$(py get "$k8s" readiness)
if wait_for 90 bash -c "[ \$(nsenter -t $pid -n curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port$liveness) = 200 ]"; then
  pass "liveness $liveness answers 200 on port $port"
else
  fail "liveness $liveness answers 200 on port $port"; podman_ logs "$ctr" 2>&1 | tail -20
fi
# Ready or not is the router's business (it does not wait for the brokers); the probe's path
# must be the readiness endpoint: its JSON answer, 200 or 503.
ready=$(nsenter -t "$pid" -n curl -s -w ' %{http_code}' "http://127.0.0.1:$port$readiness" || true)
readiness_answer() { [[ "$1" =~ ^\{\"ready\":(true|false).*\ (200|503)$ ]]; }
check "readiness $readiness answers the router's readiness (got: $ready)" readiness_answer "$ready"
check_eq "/metrics answers on port $port" 200 "$(in_pod "http://127.0.0.1:$port/metrics")"
check_eq "a change without a token is refused" 401 "$(in_pod -X POST "http://127.0.0.1:$port/api/v1/pipelines/events/pause")"
check_eq "a change with the Secret's admin token is accepted" 200 \
  "$(in_pod -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/pipelines/events/pause")"

grace=$(py get "$k8s" grace)
start=$SECONDS
podman_ kill --signal TERM "$ctr" >/dev/null
code=$(podman_ wait "$ctr")
elapsed=$((SECONDS - start))
check "SIGTERM with no broker: exits within the grace period, ${grace} s (took ${elapsed} s, exit $code)" \
  test "$elapsed" -lt "$grace"

finish
