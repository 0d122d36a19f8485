#!/usr/bin/env python3
"""Consistency checks of the deployment files, beyond what the schema validators see.

Run by scripts/check-deploy.sh (with the tools venv's Python, which has PyYAML):

    check-deploy.py compose deploy/compose.yml
        Every service of the compose file has what it refers to: build context and
        Dockerfile, bind-mounted files, declared named volumes, existing dependencies,
        distinct host ports; and if deploy/prometheus/prometheus.yml exists, its static
        targets are exactly the compose services that run `chattr serve`, on port 8080.

    check-deploy.py k8s --compose deploy/compose.yml [--label NAME] RENDERED.yaml
        The rendered output of an overlay holds together: every ConfigMap, Secret, key,
        ServiceAccount, Service and port a resource names exists; selectors match pods;
        the autoscaled Deployment sets no replica count; pods meet the namespace's
        "restricted" Pod Security Standard; and each Chattr role gets the same
        environment variables as in deploy/compose.yml (the working reference), probes on
        /health and /ready, and the scrape annotations.

Prints one line per finding and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

# Variables a Kubernetes role may have beyond its compose twin: the listen address the
# image already sets, nested settings (CHATTR__SECTION__KEY), and TURN, which compose
# leaves to the operator.
K8S_EXTRA_ENV = {"CHATTR_LISTEN"}
K8S_EXTRA_ENV_BY_ROLE = {"video": {"CHATTR_TURN_URL", "CHATTR_TURN_SECRET"}}
ROLES = ("gateway", "auth", "messaging", "relay", "fanout", "video")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


class Findings:
    """Collects findings, each printed at once with the file it concerns."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        print(f"{self.source}: {message}")


# ---- compose ----------------------------------------------------------------------------


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def compose_roles(services: dict) -> dict[str, set[str]]:
    """Role -> names of its environment variables, for every chattr service in compose
    (`migrate` for the one that runs `chattr migrate`)."""
    roles: dict[str, set[str]] = {}
    for service in services.values():
        env = compose_env(service)
        if "CHATTR_SERVICES" in env:
            role = env["CHATTR_SERVICES"]
        elif service.get("command") in (["migrate"], "migrate"):
            role = "migrate"
        else:
            continue
        roles.setdefault(role, set()).update(env)
    return roles


def is_chattr_server(service: dict) -> bool:
    return "CHATTR_SERVICES" in compose_env(service)


def check_compose(path: Path) -> int:
    findings = Findings(str(path))
    base = path.parent
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services") or {}
    if not services:
        findings.add("no services")
    declared_volumes = set((doc.get("volumes") or {}).keys())
    used_volumes: set[str] = set()
    host_ports: dict[str, str] = {}

    for name, service in services.items():
        where = f"service {name}"
        if "image" not in service and "build" not in service:
            findings.add(f"{where}: neither image nor build")
        build = service.get("build")
        if build is not None:
            if isinstance(build, str):
                build = {"context": build}
            context = (base / build.get("context", ".")).resolve()
            if not context.is_dir():
                findings.add(f"{where}: build context {context} is not a directory")
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                findings.add(f"{where}: Dockerfile {dockerfile} does not exist")

        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                kind, source = volume.get("type", "volume"), volume.get("source", "")
            else:
                source = volume.split(":", 1)[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "bind":
                if not (base / Path(source).expanduser()).exists():
                    findings.add(f"{where}: bind-mounted {source} does not exist (relative to {base})")
            elif source:
                used_volumes.add(source)
                if source not in declared_volumes:
                    findings.add(f"{where}: volume {source} is not declared under volumes:")

        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            env_path = env_file if isinstance(env_file, str) else env_file.get("path", "")
            required = isinstance(env_file, str) or env_file.get("required", True)
            if required and not (base / env_path).is_file():
                findings.add(f"{where}: env_file {env_path} does not exist")

        depends = service.get("depends_on") or []
        for dependency in depends if isinstance(depends, list) else depends.keys():
            if dependency not in services:
                findings.add(f"{where}: depends on unknown service {dependency}")

        for port in service.get("ports") or []:
            spec = str(
                port
                if not isinstance(port, dict)
                else f"{port.get('host_ip', '')}:{port.get('published', '')}:{port.get('target', '')}"
            )
            parts = spec.split(":")
            if len(parts) >= 2:
                host = ":".join(parts[:-1])
                host_port = host.rsplit(":", 1)[-1]
                if host_port in host_ports:
                    findings.add(
                        f"{where}: host port {host_port} is also published by {host_ports[host_port]}"
                    )
                host_ports[host_port] = name

    for volume in sorted(declared_volumes - used_volumes):
        findings.add(f"volume {volume} is declared but no service uses it")

    return findings.count + check_prometheus_targets(base / "prometheus" / "prometheus.yml", services)


def check_prometheus_targets(path: Path, services: dict) -> int:
    """The static scrape targets are the compose services running chattr, on 8080."""
    if not path.is_file():
        return 0  # reported as a missing bind mount of the prometheus service
    findings = Findings(str(path))
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        findings.add(f"not YAML: {err}")
        return findings.count
    targets: set[str] = set()
    for job in config.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            targets.update(str(t) for t in static.get("targets") or [])
    hosts = {t.rsplit(":", 1)[0]: t for t in targets}
    for host, target in sorted(hosts.items()):
        if host not in ("localhost", "127.0.0.1") and host not in services:
            findings.add(f"target {target} is not a compose service")
    for name, service in services.items():
        if is_chattr_server(service) and f"{name}:8080" not in targets:
            findings.add(f"compose service {name} runs chattr but {name}:8080 is not scraped")
    return findings.count


# ---- kubernetes -------------------------------------------------------------------------


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels/matchExpressions) or a Service's plain map."""
    if not selector:
        return True
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op)
        if not ok:
            return False
    return True


class Pod:
    """A pod template and what owns it."""

    def __init__(self, owner: dict) -> None:
        self.owner = owner
        self.kind = owner["kind"]
        self.name = owner["metadata"]["name"]
        template = owner["spec"]["template"]
        self.labels = template.get("metadata", {}).get("labels") or {}
        self.annotations = template.get("metadata", {}).get("annotations") or {}
        self.spec = template["spec"]
        self.containers = self.spec.get("containers") or []
        self.all_containers = self.containers + (self.spec.get("initContainers") or [])

    @property
    def where(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    def port_names(self) -> set[str]:
        return {p["name"] for c in self.containers for p in c.get("ports") or [] if "name" in p}

    def port_numbers(self) -> set[int]:
        return {p["containerPort"] for c in self.containers for p in c.get("ports") or []}

    def has_port(self, port) -> bool:
        return port in self.port_names() if isinstance(port, str) else port in self.port_numbers()


def check_k8s(rendered: Path, compose: Path, label: str | None = None) -> int:
    findings = Findings(label or str(rendered))
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        names = by_kind.setdefault(doc["kind"], {})
        name = doc["metadata"]["name"]
        if name in names:
            findings.add(f"{doc['kind'].lower()}/{name} is defined twice")
        names[name] = doc
    pods = [Pod(d) for kind in WORKLOAD_KINDS for d in by_kind.get(kind, {}).values()]
    config_maps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    services = by_kind.get("Service", {})

    def keys_of(kind: str, name: str) -> set[str] | None:
        obj = (config_maps if kind == "ConfigMap" else secrets).get(name)
        if obj is None:
            return None
        return (
            set(obj.get("data") or {}) | set(obj.get("stringData") or {}) | set(obj.get("binaryData") or {})
        )

    def matching(selector: dict | None) -> list[Pod]:
        return [p for p in pods if selector_matches(selector, p.labels)]

    # References from pods.
    for pod in pods:
        account = pod.spec.get("serviceAccountName")
        if account and account != "default" and account not in by_kind.get("ServiceAccount", {}):
            findings.add(f"{pod.where}: service account {account} does not exist")
        claims = {t["metadata"]["name"] for t in pod.owner["spec"].get("volumeClaimTemplates") or []}
        for volume in pod.spec.get("volumes") or []:
            for kind, field, name_key in (
                ("ConfigMap", "configMap", "name"),
                ("Secret", "secret", "secretName"),
            ):
                ref = volume.get(field)
                if ref and not ref.get("optional") and keys_of(kind, ref[name_key]) is None:
                    findings.add(f"{pod.where}: volume {volume['name']} names missing {kind} {ref[name_key]}")
        for container in pod.all_containers:
            mounts = {m["name"] for m in container.get("volumeMounts") or []}
            volumes = {v["name"] for v in pod.spec.get("volumes") or []} | claims
            for missing in sorted(mounts - volumes):
                findings.add(f"{pod.where}: container {container['name']} mounts undefined volume {missing}")
            for env in container.get("env") or []:
                source = env.get("valueFrom") or {}
                for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = source.get(field)
                    if not ref or ref.get("optional"):
                        continue
                    keys = keys_of(kind, ref["name"])
                    if keys is None:
                        findings.add(f"{pod.where}: {env['name']} names missing {kind} {ref['name']}")
                    elif ref["key"] not in keys:
                        findings.add(
                            f"{pod.where}: {env['name']} names key {ref['key']} absent from {kind} {ref['name']}"
                        )
            for env_from in container.get("envFrom") or []:
                for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    ref = env_from.get(field)
                    if ref and not ref.get("optional") and keys_of(kind, ref["name"]) is None:
                        findings.add(f"{pod.where}: envFrom names missing {kind} {ref['name']}")
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(probe_name) or {}
                for action in ("httpGet", "tcpSocket", "grpc"):
                    port = (probe.get(action) or {}).get("port")
                    if port is not None and not pod.has_port(port):
                        findings.add(
                            f"{pod.where}: {probe_name} uses port {port}, which no container declares"
                        )
        if pod.kind == "StatefulSet":
            service = pod.owner["spec"].get("serviceName")
            if service and service not in services:
                findings.add(f"{pod.where}: serviceName {service} is not a Service")

    # Services, budgets, autoscalers, policies, ingresses.
    for name, service in services.items():
        selected = matching(service["spec"].get("selector"))
        if not selected:
            findings.add(f"service/{name}: selector matches no pod")
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            if selected and not any(p.has_port(target) for p in selected):
                findings.add(f"service/{name}: targetPort {target} is not a port of the pods it selects")
    for name, budget in by_kind.get("PodDisruptionBudget", {}).items():
        if not matching(budget["spec"].get("selector")):
            findings.add(f"poddisruptionbudget/{name}: selector matches no pod")
    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        ref = hpa["spec"]["scaleTargetRef"]
        target = by_kind.get(ref["kind"], {}).get(ref["name"])
        if target is None:
            findings.add(f"horizontalpodautoscaler/{name}: target {ref['kind']}/{ref['name']} does not exist")
        elif "replicas" in target["spec"]:
            findings.add(
                f"{ref['kind'].lower()}/{ref['name']}: sets replicas, which every apply would reset under its autoscaler"
            )
    for name, policy in by_kind.get("NetworkPolicy", {}).items():
        selector = policy["spec"].get("podSelector") or {}
        targets = matching(selector)
        if selector and not targets:
            findings.add(f"networkpolicy/{name}: podSelector matches no pod")
        for rule in policy["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                if (
                    "podSelector" in peer
                    and "namespaceSelector" not in peer
                    and not matching(peer["podSelector"])
                ):
                    findings.add(f"networkpolicy/{name}: a 'from' podSelector matches no pod")
            for port in rule.get("ports") or []:
                if "port" in port and targets and not any(p.has_port(port["port"]) for p in targets):
                    findings.add(
                        f"networkpolicy/{name}: port {port['port']} is not a port of the pods it selects"
                    )
    for name, ingress in by_kind.get("Ingress", {}).items():
        for rule in ingress["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                backend = path["backend"].get("service") or {}
                service = services.get(backend.get("name"))
                if service is None:
                    findings.add(f"ingress/{name}: backend service {backend.get('name')} does not exist")
                    continue
                port = backend.get("port") or {}
                wanted = port.get("name", port.get("number"))
                if not any(p.get("name") == wanted or p["port"] == wanted for p in service["spec"]["ports"]):
                    findings.add(f"ingress/{name}: service {backend['name']} has no port {wanted}")

    # Pod Security: the "restricted" profile where the namespace enforces it.
    restricted = any(
        (ns["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce") == "restricted"
        for ns in by_kind.get("Namespace", {}).values()
    )
    if restricted:
        for pod in pods:
            check_restricted(pod, findings)

    check_chattr_roles(pods, compose, findings)
    return findings.count


def check_restricted(pod: Pod, findings: Findings) -> None:
    spec = pod.spec
    pod_ctx = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            findings.add(f"{pod.where}: {flag} is not allowed under the restricted profile")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            findings.add(
                f"{pod.where}: hostPath volume {volume['name']} is not allowed under the restricted profile"
            )
    for container in pod.all_containers:
        ctx = container.get("securityContext") or {}
        what = f"{pod.where} container {container['name']}"
        # The container's setting wins over the pod's.
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
            findings.add(f"{what}: runAsNonRoot must be true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            findings.add(f"{what}: runs as uid 0")
        seccomp = (ctx.get("seccompProfile", pod_ctx.get("seccompProfile")) or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            findings.add(f"{what}: seccompProfile must be RuntimeDefault or Localhost")
        if ctx.get("allowPrivilegeEscalation") is not False:
            findings.add(f"{what}: allowPrivilegeEscalation must be false")
        if ctx.get("privileged"):
            findings.add(f"{what}: privileged")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            findings.add(f"{what}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            findings.add(f"{what}: adds capabilities beyond NET_BIND_SERVICE")


def check_chattr_roles(pods: list[Pod], compose: Path, findings: Findings) -> None:
    """Each role as compose runs it, with Chattr's probes, annotations and hardening."""
    reference = compose_roles(yaml.safe_load(compose.read_text()).get("services") or {})
    seen: set[str] = set()
    for pod in pods:
        if pod.labels.get("app.kubernetes.io/name") != "chattr":
            continue
        role = pod.labels.get("app.kubernetes.io/component")
        if role is None:
            findings.add(f"{pod.where}: no app.kubernetes.io/component label")
            continue
        seen.add(role)
        container = next((c for c in pod.containers if c["name"] == "chattr"), None)
        if container is None:
            findings.add(f"{pod.where}: no container named chattr")
            continue
        env = {e["name"]: e for e in container.get("env") or []}
        names = set(env)
        ctx = container.get("securityContext") or {}
        if ctx.get("readOnlyRootFilesystem") is not True:
            findings.add(f"{pod.where}: the root filesystem should be read-only")

        if pod.kind != "Job":
            services_value = env.get("CHATTR_SERVICES", {}).get("value")
            if services_value != role:
                findings.add(
                    f"{pod.where}: CHATTR_SERVICES is {services_value!r}, its component label says {role!r}"
                )
            expected_annotations = {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8080",
                "prometheus.io/path": "/metrics",
            }
            for key, value in expected_annotations.items():
                if pod.annotations.get(key) != value:
                    findings.add(f"{pod.where}: annotation {key} should be {value!r}")
            listen = env.get("CHATTR_LISTEN", {}).get("value")
            if listen != "0.0.0.0:8080":
                findings.add(f"{pod.where}: CHATTR_LISTEN should be 0.0.0.0:8080, is {listen!r}")
            for probe_name, path in (
                ("startupProbe", "/health"),
                ("livenessProbe", "/health"),
                ("readinessProbe", "/ready"),
            ):
                http = (container.get(probe_name) or {}).get("httpGet") or {}
                if http.get("path") != path or http.get("port") not in ("http", 8080):
                    findings.add(f"{pod.where}: {probe_name} should be GET {path} on port http (8080)")
            grpc_ok = env.get("CHATTR_GRPC_LISTEN", {}).get("value") == "0.0.0.0:9090" and pod.has_port(9090)
            if role in ("auth", "messaging", "video") and not grpc_ok:
                findings.add(f"{pod.where}: a gRPC role should listen on 0.0.0.0:9090 and declare the port")

        if role not in reference:
            findings.add(f"{pod.where}: compose has no {role} service to compare with")
            continue
        allowed = K8S_EXTRA_ENV | K8S_EXTRA_ENV_BY_ROLE.get(role, set())
        extra = {n for n in names - reference[role] if n not in allowed and not n.startswith("CHATTR__")}
        missing = reference[role] - names
        for name in sorted(missing):
            findings.add(f"{pod.where}: compose gives the {role} role {name}, this pod does not")
        for name in sorted(extra):
            findings.add(
                f"{pod.where}: {name} is not in compose's {role} service (add it there, or to the allowed extras)"
            )
    for role in (*ROLES, "migrate"):
        if role not in seen:
            findings.add(f"no pod for the {role} role")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    compose = sub.add_parser("compose", help="check a compose file")
    compose.add_argument("file", type=Path)
    k8s = sub.add_parser("k8s", help="check an overlay's rendered output")
    k8s.add_argument("--compose", type=Path, required=True, help="the compose file to compare roles with")
    k8s.add_argument("--label", help="how findings name the rendered file (default: its path)")
    k8s.add_argument("rendered", type=Path)
    args = parser.parse_args()
    if args.command == "compose":
        count = check_compose(args.file)
    else:
        count = check_k8s(args.rendered, args.compose, args.label)
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())
