#!/usr/bin/env python3
"""The PromQL of docs/monitoring, for tests/deploy/monitoring.sh.

    promql.py exprs DASHBOARD.json RULES.yml   one line per expression: name TAB expression
    promql.py query PROMETHEUS_URL EXPR        exit 0 if the instant query returns data
    promql.py rules PROMETHEUS_URL             exit 0 if every rule evaluates without error

Grafana's variables are replaced as Grafana would with "All" selected (`.*`) and the ranges
it computes by values valid here, so the expression sent is the panel's own; a `$` left over
(a variable this script does not know) is an error, not something silently sent.
"""

import json
import re
import sys
import urllib.parse
import urllib.request

import yaml

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$job": ".*",
    "$instance": ".*",
    "$pipeline": ".*",
}


def dashboard_exprs(path):
    """Every `expr` in the dashboard, wherever it is nested, with its panel's title."""
    found = []

    def walk(node, title):
        if isinstance(node, dict):
            title = node.get("title", title)
            if isinstance(node.get("expr"), str):
                found.append((f"dashboard: {title} ({node.get('refId', '?')})", node["expr"]))
            for value in node.values():
                walk(value, title)
        elif isinstance(node, list):
            for value in node:
                walk(value, title)

    walk(json.load(open(path)), "")
    return found


def grafana_to_promql(expr):
    # Longest names first, so `$__range` is not taken for a prefix of something longer.
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    if "$" in expr:
        raise SystemExit(f"unknown Grafana variable in: {expr}")
    return expr


def rule_exprs(path):
    rules = yaml.safe_load(open(path))
    return [
        (f"rule: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def main():
    command = sys.argv[1]
    if command == "exprs":
        for name, expr in dashboard_exprs(sys.argv[2]):
            print(f"{name}\t{' '.join(grafana_to_promql(expr).split())}")
        for name, expr in rule_exprs(sys.argv[3]):
            print(f"{name}\t{' '.join(expr.split())}")
    elif command == "query":
        url = sys.argv[2] + "/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[3]})
        answer = get(url)
        if answer["status"] != "success" or not answer["data"]["result"]:
            print(json.dumps(answer)[:500])
            sys.exit(1)
    elif command == "rules":
        answer = get(sys.argv[2] + "/api/v1/rules")
        rules = [r for g in answer["data"]["groups"] for r in g["rules"]]
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        if not rules or bad:
            print(f"rules: {len(rules)}, unhealthy: {bad}")
            sys.exit(1)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
