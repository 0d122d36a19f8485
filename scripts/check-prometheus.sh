#!/usr/bin/env bash
# Checks Chattr's monitoring configuration on a Debian machine: both Prometheus configs,
# the alert and recording rules and their unit tests (promtool), the conventions the
# rules and dashboards follow, and that the Grafana dashboards match their generator
# (scripts/check-prometheus.py, deploy/grafana/generate.py). Needs no cluster; installs
# the Debian prometheus package (for promtool) and PyYAML if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  echo "installing prometheus (for promtool)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi

# The Python checks read YAML: use a python3 that has PyYAML, else Debian's with its package.
python=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
  python=/usr/bin/python3
  if ! "$python" -c 'import yaml' 2>/dev/null; then
    echo "installing python3-yaml"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-yaml >/dev/null
  fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" scripts/check-prometheus.py prepare "$tmp"

echo "== Prometheus configs"
# The configs load their rules from /etc/prometheus/rules, where compose and Kubernetes
# mount them; the copies checked here load them from this checkout instead, so the rules
# are checked as part of each config.
promtool check config "$tmp/prometheus.yml"
if ! promtool check config "$tmp/prometheus-kubernetes.yml" >"$tmp/k8s.out" 2>&1; then
  if grep -q 'field kubernetes_sd_configs not found' "$tmp/k8s.out"; then
    # Debian builds Prometheus without Kubernetes discovery; check everything else.
    echo "(this promtool has no Kubernetes discovery: checking the Kubernetes config with a static target instead)"
    promtool check config "$tmp/prometheus-kubernetes-static.yml"
  else
    cat "$tmp/k8s.out" >&2
    exit 1
  fi
else
  cat "$tmp/k8s.out"
fi

echo "== rules"
promtool check rules deploy/prometheus/rules/*.yml
promtool test rules deploy/prometheus/tests/*.yml

echo "== conventions"
"$python" scripts/check-prometheus.py conventions

echo "== dashboards"
"$python" deploy/grafana/generate.py --check
# Every dashboard query parses (promtool evaluates each on an empty database).
promtool test rules "$tmp/dashboard_queries_test.yml" >/dev/null \
  || promtool test rules "$tmp/dashboard_queries_test.yml"
echo "  $(ls deploy/grafana/dashboards/*.json | wc -l) dashboards up to date, every query parses"

echo "monitoring checks passed"
