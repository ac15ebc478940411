#!/usr/bin/env bash
# Deployment assets, offline: every kustomization renders (kubectl
# kustomize), the YAML lints (yamllint), the rendered objects carry what an
# operator needs (see the asserts), and the image's runtime stage installs
# every library the built daemons link (ldd + dpkg -S).
# Usage: test_deploy.sh BIN_DIR
set -uo pipefail
bin=$1
source "$(dirname "$0")/lib.sh"
root=$rm_root
make_tmp
py=/usr/bin/python3  # Debian's, with python3-yaml

if command -v kubectl >/dev/null; then
  for k in base overlays/production overlays/kv-bytes overlays/tls overlays/gateway; do
    kubectl kustomize "$root/deploy/k8s/$k" >"$tmp/$(basename "$k").yaml" && ok || bad "kustomize $k"
  done
else
  bad "kubectl not installed (tests/run.sh installs it)"
fi
if command -v yamllint >/dev/null; then
  yamllint -s -c "$root/.yamllint" "$root/deploy/k8s" "$root/deploy/prometheus" && ok || bad "yamllint"
else
  bad "yamllint not installed"
fi
if [[ -s "$tmp/base.yaml" ]]; then
  "$py" - "$tmp/base.yaml" "$tmp/kv-bytes.yaml" "$tmp/production.yaml" "$tmp/tls.yaml" \
    "$tmp/gateway.yaml" <<'PY' && ok || bad "rendered manifests"
import sys, yaml
docs = lambda p: [d for d in yaml.safe_load_all(open(p)) if d]
base = docs(sys.argv[1])
def one(kind, name, objs=base):
    found = [d for d in objs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]
cm = one("ConfigMap", "radixmesh-config")["data"]
sts = one("StatefulSet", "radixmesh-node")
svc = one("Service", "radixmesh-node")
dep = one("Deployment", "radixmesh-router")
one("Service", "radixmesh-router")
assert sts["spec"]["serviceName"] == "radixmesh-node" and svc["spec"]["clusterIP"] == "None"
assert dep["spec"]["replicas"] >= 2
for w in (sts, dep):
    pod = w["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "grpc" in c["livenessProbe"] and "grpc" in c["readinessProbe"], "native grpc probes"
    r = c["resources"]
    assert r["requests"]["cpu"] and r["requests"]["memory"] and r["limits"]["memory"]
    psc, sc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] and psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The grace period covers NOT_SERVING delay + drain.
    need = (int(cm["RADIXMESH_SHUTDOWN_DELAY_MS"]) + int(cm["RADIXMESH_DRAIN_TIMEOUT_MS"])) / 1000
    assert pod["terminationGracePeriodSeconds"] >= need, (pod["terminationGracePeriodSeconds"], need)
    assert {"configMapRef": {"name": "radixmesh-config"}} in c["envFrom"]
assert "--node-id=$(POD_NAME)" in sts["spec"]["template"]["spec"]["containers"][0]["args"]
assert any(a.startswith("--nodes-dns=radixmesh-node.") for a in dep["spec"]["template"]["spec"]["containers"][0]["args"])
for name in ("radixmesh-node", "radixmesh-router"):
    one("PodDisruptionBudget", name)
np = one("NetworkPolicy", "radixmesh-node")
grpc_rules = [r for r in np["spec"]["ingress"] if any(p["port"] == 7001 for p in r["ports"])]
assert len(grpc_rules) == 1 and grpc_rules[0]["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "radixmesh-router"}}}]
one("PodMonitor", "radixmesh-node")
one("ServiceMonitor", "radixmesh-router")
assert cm["RADIXMESH_HOT_BLOCK_TOKENS"] == cm["RADIXMESH_KEY_BLOCK_TOKENS"]
# KV nodes: the memory limit sits above the pool.
kv = docs(sys.argv[2])
kcm = one("ConfigMap", "radixmesh-config", kv)["data"]
lim = one("StatefulSet", "radixmesh-node", kv)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
assert int(lim[:-2]) * units[lim[-2:]] > int(kcm["RADIXMESH_POOL_BYTES"]), (lim, kcm["RADIXMESH_POOL_BYTES"])
prod = docs(sys.argv[3])
assert one("StatefulSet", "radixmesh-node", prod)["spec"]["replicas"] == 8
assert all(d["metadata"].get("namespace") == "radixmesh" for d in prod)
# TLS from a Secret: certificates mounted read-only, flags set, the nodes
# require client certificates, probes over plaintext HTTP.
tls = docs(sys.argv[4])
tcm = one("ConfigMap", "radixmesh-config", tls)["data"]
assert tcm["RADIXMESH_TLS_CERT"].startswith("/etc/radixmesh/tls/") and tcm["RADIXMESH_TLS_CA"]
for kind, name in (("StatefulSet", "radixmesh-node"), ("Deployment", "radixmesh-router")):
    pod = one(kind, name, tls)["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "tls", "secret": {"secretName": "radixmesh-tls"}}]
    c = pod["containers"][0]
    assert {"name": "tls", "mountPath": "/etc/radixmesh/tls", "readOnly": True} in c["volumeMounts"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
node_env = one("StatefulSet", "radixmesh-node", tls)["spec"]["template"]["spec"]["containers"][0]["env"]
assert {"name": "RADIXMESH_REQUIRE_CLIENT_CERT", "value": "true"} in node_env
# Gateway mode: the worker is a sidecar of its node, named by loopback; the
# routers serve HTTP on 8080 and may reach the workers' port.
gw = docs(sys.argv[5])
assert one("ConfigMap", "radixmesh-config", gw)["data"]["RADIXMESH_WORKER_URL"] == "http://127.0.0.1:8000"
gpod = one("StatefulSet", "radixmesh-node", gw)["spec"]["template"]["spec"]
names = [c["name"] for c in gpod["containers"]]
assert names == ["node", "worker"], names
assert gpod["containers"][1]["ports"] == [{"name": "openai", "containerPort": 8000}]
gdep = one("Deployment", "radixmesh-router", gw)["spec"]["template"]["spec"]["containers"][0]
assert "--gateway=0.0.0.0:8080" in gdep["args"]
assert {"name": "gateway", "port": 8080, "targetPort": "gateway"} in one("Service", "radixmesh-router", gw)["spec"]["ports"]
gnp = one("NetworkPolicy", "radixmesh-node", gw)["spec"]["ingress"]
assert any(r["ports"] == [{"port": 8000, "protocol": "TCP"}] and r["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "radixmesh-router" for r in gnp)
PY
fi

# The image: multi-stage on bookworm, non-root, and its runtime apt-get line
# names every package that provides a library the daemons link.
df="$root/deploy/Dockerfile"
grep -qE '^FROM debian:bookworm AS build' "$df" && grep -qE '^FROM debian:bookworm-slim AS runtime' "$df" && ok || bad "multi-stage bookworm"
grep -qE '^USER 65532' "$df" && ok || bad "non-root user"
runtime=$(sed -n '/AS runtime/,$p' "$df" | tr '\\\n' '  ')
missing=""
for b in radixmesh-node radixmesh-router radixmesh; do ldd "$bin/$b" | awk '/=>/ {print $3}'; done | sort -u >"$tmp/libs"
if grep -q libasan "$tmp/libs"; then
  # The image ships release builds; a sanitizer build links its runtimes.
  echo "note: $bin holds sanitizer builds; the ldd check runs on the release build"
  : >"$tmp/libs"
fi
while read -r lib; do
  real=$(readlink -f "$lib")
  pkg=$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || dpkg -S "$lib" 2>/dev/null)
  pkg=${pkg%%:*}
  [[ -n "$pkg" ]] || { missing+=" $lib(no package)"; continue; }
  grep -qw -- "$pkg" <<<"$runtime" || missing+=" $pkg"
done <"$tmp/libs"
[[ -z "$missing" ]] && ok || bad "runtime stage lacks:$missing"
summary
