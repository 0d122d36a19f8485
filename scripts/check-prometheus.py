#!/usr/bin/env python3
"""The checks of scripts/check-prometheus.sh that promtool does not do.

    check-prometheus.py conventions      rules, their tests, runbook anchors, dashboards
    check-prometheus.py prepare DIR      write into DIR what the shell script feeds promtool

`conventions` fails (exit 1) listing every problem: alert expressions not of the form
`<signal> <op> <threshold>`, alerts without `for`, severity or annotations, runbook
anchors missing from docs/alerts.md, alerts no unit test makes fire, unit tests naming
alerts that do not exist, and dashboards that break the rules stated in
deploy/grafana/generate.py.

`prepare DIR` writes copies of the Prometheus configs whose rule_files point at this
checkout (they point at /etc/prometheus/rules, where the deployments mount the rules), a
copy of the Kubernetes config with its pod discovery swapped for a static target (for
promtool builds without Kubernetes discovery, such as Debian's), and a promtool test file
that parses every dashboard query.
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy/prometheus"
RULES = PROMETHEUS / "rules"
TESTS = PROMETHEUS / "tests"
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
RUNBOOK = ROOT / "docs/alerts.md"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
SEVERITIES = {"page", "ticket"}
ANNOTATIONS = {"summary", "description", "runbook_url"}
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
FORBIDDEN_WORDS = {"bool", "and", "or", "unless", "absent", "absent_over_time"}
NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def rule_files():
    return sorted(RULES.glob("*.yml"))


def alerts():
    """Every alerting rule, as (file, rule)."""
    for path in rule_files():
        for group in load_yaml(path).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    yield path, rule


# ---- alert expressions ------------------------------------------------------------------


def skip_quoted(expr, i):
    """Index just past the string literal starting at expr[i]."""
    quote = expr[i]
    i += 1
    while i < len(expr) and expr[i] != quote:
        i += 2 if expr[i] == "\\" and quote != "`" else 1
    return i + 1


def skip_until(expr, i, closing):
    """Index just past `closing`, skipping string literals on the way (label matchers)."""
    while i < len(expr) and expr[i] != closing:
        i = skip_quoted(expr, i) if expr[i] in "\"'`" else i + 1
    return i + 1


def scan(expr):
    """Comparison operators (depth, index, op) and lower-cased words outside literals,
    label matchers and range selectors."""
    operators, words = [], set()
    depth, i = 0, 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = skip_quoted(expr, i)
        elif c == "{":
            i = skip_until(expr, i + 1, "}")
        elif c == "[":
            i = skip_until(expr, i + 1, "]")
        elif c == "(":
            depth, i = depth + 1, i + 1
        elif c == ")":
            depth, i = depth - 1, i + 1
        elif expr[i : i + 2] in COMPARISONS:
            operators.append((depth, i, expr[i : i + 2]))
            i += 2
        elif c in "<>":
            operators.append((depth, i, c))
            i += 1
        elif m := IDENTIFIER.match(expr, i):
            words.add(m.group().lower())
            i = m.end()
        else:
            i += 1
    return operators, words


def expr_problems(expr):
    if "\n" in expr.strip():
        return ["is not on one line"]
    expr = expr.strip()
    operators, words = scan(expr)
    problems = []
    if forbidden := sorted(words & FORBIDDEN_WORDS):
        problems.append(f"uses {', '.join(forbidden)}")
    if len(operators) != 1:
        return problems + [f"has {len(operators)} comparison operators, not 1"]
    depth, index, op = operators[0]
    before, after = expr[:index], expr[index + len(op) :]
    if depth != 0:
        problems.append(f"compares inside parentheses ({op})")
    if not (before.endswith(" ") and not before.endswith("  ") and after.startswith(" ") and not after.startswith("  ")):
        problems.append(f"does not have exactly one space on each side of {op}")
    if not NUMBER.match(after.strip()):
        problems.append(f"threshold {after.strip()!r} is not a number")
    return problems


def github_anchor(heading):
    anchor = heading.strip().lower()
    anchor = re.sub(r"[^\w\- ]", "", anchor)
    return anchor.replace(" ", "-")


def check_rules(problems):
    anchors = set()
    if RUNBOOK.exists():
        for line in RUNBOOK.read_text().splitlines():
            if m := re.match(r"^#{1,6} (.+)$", line):
                anchors.add(github_anchor(m.group(1)))
    else:
        problems.append(f"{RUNBOOK.relative_to(ROOT)} is missing")

    names = {}
    for path, rule in alerts():
        name = rule["alert"]
        where = f"{path.relative_to(ROOT)}: {name}"
        if name in names:
            problems.append(f"{where}: defined twice")
        names[name] = where
        for problem in expr_problems(str(rule.get("expr", ""))):
            problems.append(f"{where}: expr {problem}")
        if "for" not in rule:
            problems.append(f"{where}: no `for`")
        severity = rule.get("labels", {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{where}: severity {severity!r}, not one of {sorted(SEVERITIES)}")
        annotations = rule.get("annotations", {})
        if missing := ANNOTATIONS - set(annotations):
            problems.append(f"{where}: no {', '.join(sorted(missing))} annotation")
        url = annotations.get("runbook_url", "")
        expected = f"docs/alerts.md#{name.lower()}"
        if url != expected:
            problems.append(f"{where}: runbook_url {url!r}, expected {expected!r}")
        elif name.lower() not in anchors:
            problems.append(f"{where}: docs/alerts.md has no section `{name}`")
    return names


def check_tests(problems, names):
    fired = set()
    for path in sorted(TESTS.glob("*.yml")):
        for test in load_yaml(path).get("tests", []):
            for case in test.get("alert_rule_test", []):
                name = case.get("alertname")
                if name not in names:
                    problems.append(f"{path.relative_to(ROOT)}: tests unknown alert {name!r}")
                if case.get("exp_alerts"):
                    fired.add(name)
    for name in sorted(set(names) - fired):
        problems.append(f"{names[name]}: no unit test makes it fire")


# ---- dashboards -------------------------------------------------------------------------


def query_problems(expr):
    problems = []
    variables = set(re.findall(r"\$\{?\w*", expr)) - {"$__rate_interval"}
    if variables:
        problems.append(f"uses {', '.join(sorted(variables))} (only $__rate_interval is allowed)")
    if re.search(r"\bor\s+vector\s*\(", expr):
        problems.append("uses `or vector(...)`")
    return problems


def dashboard_files():
    return sorted(DASHBOARDS.glob("*.json"))


def check_dashboards(problems):
    uids = {}
    files = dashboard_files()
    if not files:
        problems.append(f"no dashboards in {DASHBOARDS.relative_to(ROOT)}")
    for path in files:
        name = path.relative_to(ROOT)
        try:
            board = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            problems.append(f"{name}: not JSON: {e}")
            continue
        uid = board.get("uid")
        if not uid or uid in uids:
            problems.append(f"{name}: uid {uid!r} missing or also used by {uids.get(uid)}")
        uids[uid] = name
        if board.get("schemaVersion") != 39:
            problems.append(f"{name}: schemaVersion {board.get('schemaVersion')!r}, expected 39")
        ids, cells = set(), {}
        for panel in board.get("panels", []):
            where = f"{name}: panel {panel.get('id')} ({panel.get('title')!r})"
            if panel.get("id") in ids or not isinstance(panel.get("id"), int):
                problems.append(f"{where}: id missing or not unique")
            ids.add(panel.get("id"))
            if panel.get("type") not in ("timeseries", "stat"):
                problems.append(f"{where}: type {panel.get('type')!r}")
            if panel.get("datasource") != DATASOURCE:
                problems.append(f"{where}: datasource is not {DATASOURCE}")
            grid = panel.get("gridPos", {})
            if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["x"] + grid["w"] > 24:
                problems.append(f"{where}: gridPos {grid} is not a place on the 24-wide grid")
            else:
                overlapped = set()
                for x in range(grid["x"], grid["x"] + grid["w"]):
                    for y in range(grid["y"], grid["y"] + grid["h"]):
                        owner = cells.setdefault((x, y), panel.get("id"))
                        if owner != panel.get("id"):
                            overlapped.add(owner)
                for other in sorted(overlapped):
                    problems.append(f"{where}: overlaps panel {other}")
            targets = panel.get("targets") or []
            if not targets:
                problems.append(f"{where}: no targets")
            ref_ids = [t.get("refId") for t in targets]
            if len(set(ref_ids)) != len(ref_ids):
                problems.append(f"{where}: refIds not unique")
            for t in targets:
                if (t.get("datasource") or {}).get("uid") != DATASOURCE["uid"]:
                    problems.append(f"{where}: target {t.get('refId')} datasource uid is not prometheus")
                if not str(t.get("expr", "")).strip():
                    problems.append(f"{where}: target {t.get('refId')} has no expr")
                if not t.get("legendFormat"):
                    problems.append(f"{where}: target {t.get('refId')} has no legendFormat")
                for problem in query_problems(str(t.get("expr", ""))):
                    problems.append(f"{where}: target {t.get('refId')} {problem}")

    provisioned = load_yaml(ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml")
    if not any(d.get("uid") == DATASOURCE["uid"] for d in provisioned.get("datasources", [])):
        problems.append("deploy/grafana/provisioning/datasources/prometheus.yml: no datasource with uid prometheus")


def conventions():
    problems = []
    names = check_rules(problems)
    check_tests(problems, names)
    check_dashboards(problems)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"  {len(names)} alerts and {len(dashboard_files())} dashboards follow the conventions")
    return 0


# ---- files for promtool -----------------------------------------------------------------


def prepare(out):
    out = Path(out)
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        config = load_yaml(PROMETHEUS / name)
        config["rule_files"] = [str(RULES / "*.yml")]
        (out / name).write_text(yaml.safe_dump(config, sort_keys=False))
        if name == "prometheus-kubernetes.yml":
            for job in config["scrape_configs"]:
                if job.pop("kubernetes_sd_configs", None) is not None:
                    job["static_configs"] = [{"targets": ["kubernetes-pod.invalid:8080"]}]
            (out / "prometheus-kubernetes-static.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    # Every dashboard query, evaluated on no data: promtool fails on a query that does
    # not parse, and an unparsable query is all this catches.
    cases = []
    for path in dashboard_files():
        for panel in json.loads(path.read_text()).get("panels", []):
            for t in panel.get("targets", []):
                expr = t.get("expr", "").replace("$__rate_interval", "1m")
                cases.append({"expr": expr, "eval_time": "1m", "exp_samples": []})
    test = {"rule_files": [], "tests": [{"interval": "1m", "input_series": [], "promql_expr_test": cases}]}
    (out / "dashboard_queries_test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    return 0


def main(argv):
    if argv[1:] == ["conventions"]:
        return conventions()
    if len(argv) == 3 and argv[1] == "prepare":
        return prepare(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
