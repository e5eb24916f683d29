#!/usr/bin/env python3
"""Reads deploy/kubernetes for tests/deploy/kubernetes.sh.

    k8s.py discovery PORT          a stand-in API server answering only discovery (see below)
    k8s.py config DIR              the ConfigMap's switchyard.toml
    k8s.py env DIR                 the Secret's values as an env file (KEY=VALUE lines)
    k8s.py get DIR FIELD           one field of the Deployment's container (args, port, liveness,
                                   readiness, grace, config-dir, home) one value per line
    k8s.py agree DIR ADMIN_DEFAULT STOP_SLACK_S IMAGE_USER
                                   the manifests agree with each other and with the binary:
                                   prints `PASS<TAB>what` or `FAIL<TAB>what<TAB>why` lines

`kubectl create --dry-run=client` needs an API server even with --validate=false: it maps
each kind to its resource through discovery. The stand-in serves the discovery documents of
the kinds the manifests use (nothing else), so kubectl builds every object offline; the
schemas are checked by kubernetes-validate.
"""

import http.server
import re
import json
import pathlib
import sys
import tomllib

import yaml

RESOURCES = {
    "/api/v1": ("v1", [("configmaps", "ConfigMap"), ("secrets", "Secret"), ("services", "Service")]),
    "/apis/apps/v1": ("apps/v1", [("deployments", "Deployment")]),
    "/apis/policy/v1": ("policy/v1", [("poddisruptionbudgets", "PodDisruptionBudget")]),
}


def discovery(port):
    def resource_list(group_version, resources):
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": [
                {"name": name, "singularName": kind.lower(), "namespaced": True, "kind": kind,
                 "verbs": ["create", "get", "list", "delete", "patch", "update"]}
                for name, kind in resources
            ],
        }

    documents = {
        "/api": {"kind": "APIVersions", "versions": ["v1"],
                 "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}}
            for g in ("apps", "policy")]},
    }
    for path, (group_version, resources) in RESOURCES.items():
        documents[path] = resource_list(group_version, resources)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            document = documents.get(self.path.split("?")[0])
            body = json.dumps(document or {"kind": "Status", "code": 404}).encode()
            self.send_response(200 if document else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()


def objects(directory):
    found = {}
    for path in sorted(pathlib.Path(directory).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                found[doc["kind"]] = doc
    return found


def container(objs):
    return objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def config_text(objs):
    return objs["ConfigMap"]["data"]["switchyard.toml"]


def mounts(objs):
    return {m["name"]: m for m in container(objs).get("volumeMounts", [])}


def get(objs, field):
    c = container(objs)
    if field == "args":
        return c["args"]
    if field == "port":
        return [str(c["ports"][0]["containerPort"])]
    if field in ("liveness", "readiness", "startup"):
        return [c[f"{field}Probe"]["httpGet"]["path"]]
    if field == "grace":
        return [str(objs["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])]
    if field == "config-dir":
        return [mounts(objs)["config"]["mountPath"]]
    if field == "home":
        return [mounts(objs)["home"]["mountPath"]]
    raise SystemExit(f"unknown field {field}")


def agree(objs, admin_default, stop_slack_s, image_user):
    results = []

    def expect(what, ok, why=""):
        results.append(f"PASS\t{what}" if ok else f"FAIL\t{what}\t{why}")

    deployment = objs["Deployment"]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    c = container(objs)
    config = tomllib.loads(config_text(objs))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    default_port = int(admin_default.rsplit(":", 1)[1])
    listen = config.get("admin", {}).get("listen", admin_default)
    listen_port = int(listen.rsplit(":", 1)[1])

    expect(f"the admin port is the binary's default ({default_port})", listen_port == default_port,
           f"config listens on {listen}")
    expect("the container's admin port is the one the config listens on", ports.get("admin") == listen_port,
           f"containerPort {ports.get('admin')}, listen {listen}")
    expect("the admin API listens beyond loopback (probes come from the kubelet)",
           listen.rsplit(":", 1)[0] in ("0.0.0.0", "[::]"), listen)
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get_ = c.get(probe, {}).get("httpGet", {})
        port = get_.get("port")
        port = ports.get(port, port)
        expect(f"{probe} asks {path} on the admin port", get_.get("path") == path and port == listen_port,
               f"{get_}")
    annotations = pod["metadata"].get("annotations", {})
    expect("the scrape annotations name the admin port and /metrics",
           annotations.get("prometheus.io/port") == str(listen_port) and annotations.get("prometheus.io/path") == "/metrics",
           str(annotations))

    drain_s = max([p.get("drain_timeout_ms", 10000) for p in config.get("pipeline", [])] or [10000]) / 1000
    deadline = 2 * drain_s + stop_slack_s
    grace = spec.get("terminationGracePeriodSeconds", 30)
    expect(f"terminationGracePeriodSeconds ({grace}) is longer than the stop deadline (2 x {drain_s:g} + {stop_slack_s:g} = {deadline:g} s)",
           grace > deadline)

    secret = objs["Secret"]
    values = secret.get("stringData", {})
    env_from = [e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])]
    expect("the container's environment comes from the Secret", secret["metadata"]["name"] in env_from, str(env_from))
    wanted = sorted(set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", config_text(objs))))
    expect(f"every ${{VAR}} of the config is in the Secret ({', '.join(wanted)})",
           wanted and all(v in values for v in wanted), f"Secret has {sorted(values)}")
    expect("the admin token comes from the Secret (SWITCHYARD_ADMIN_TOKEN, 16 characters at least)",
           len(values.get("SWITCHYARD_ADMIN_TOKEN", "")) >= 16)

    expect("replicas share the consumer group (no pipeline sets a group of its own per pod)",
           all("${" not in p.get("group", "") for p in config.get("pipeline", [])))
    expect("more than one replica", deployment["spec"].get("replicas", 1) >= 2)
    selector = objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    labels = pod["metadata"]["labels"]
    expect("the PodDisruptionBudget selects the Deployment's pods",
           all(labels.get(k) == v for k, v in selector.items()), f"{selector} vs {labels}")
    expect("the Deployment's selector matches its pods",
           all(labels.get(k) == v for k, v in deployment["spec"]["selector"]["matchLabels"].items()))

    user = spec.get("securityContext", {}).get("runAsUser")
    expect(f"runs as the image's user ({image_user})", str(user) == image_user.split(":")[0], str(user))
    m = mounts(objs)
    config_arg = c["args"][c["args"].index("--config") + 1]
    expect("--config names the file in the ConfigMap's mount",
           config_arg == m["config"]["mountPath"].rstrip("/") + "/switchyard.toml" and m["config"].get("readOnly"),
           config_arg)
    state_dir = config.get("admin", {}).get("state_dir", "")
    expect("the state directory is on a writable volume",
           any(state_dir.startswith(mount["mountPath"].rstrip("/") + "/") and not mount.get("readOnly")
               for mount in m.values()), state_dir)
    requests = c.get("resources", {}).get("requests", {})
    limits = c.get("resources", {}).get("limits", {})
    expect("memory request and limit are set", "memory" in requests and "memory" in limits)
    print("\n".join(results))


def main():
    command = sys.argv[1]
    if command == "discovery":
        discovery(sys.argv[2])
        return
    objs = objects(sys.argv[2])
    if command == "config":
        sys.stdout.write(config_text(objs))
    elif command == "env":
        for key, value in objs["Secret"]["stringData"].items():
            print(f"{key}={value}")
    elif command == "get":
        print("\n".join(get(objs, sys.argv[3])))
    elif command == "agree":
        agree(objs, sys.argv[3], float(sys.argv[4]), sys.argv[5])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
