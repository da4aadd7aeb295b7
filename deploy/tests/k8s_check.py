"""Checks the objects `kubectl kustomize` rendered from deploy/k8s/{sidecar,central,monitoring} (see k8s.sh).

argv: RENDER_DIR PGWARD_BINARY INTERFACE_MD README_MD WORK_DIR. RENDER_DIR holds sidecar.yaml, central.yaml and
monitoring.yaml. Prints one line per check; exits 1 when any failed.
"""
import os
import re
import subprocess
import sys
import tomllib

import yaml

render_dir, pgward, interface_md, readme_md, work_dir = sys.argv[1:6]
failures = 0

# The central tier's budget of server connections: max_connections 100 - 3 reserved - 17 for other clients.
SERVER_CONNECTION_BUDGET = 80


def check(what, condition, detail=""):
    global failures
    if condition:
        print(f"  ok: {what}")
    else:
        failures += 1
        print(f"  FAILED: {what}" + (f" ({detail})" if detail else ""))
    return condition


def load(name):
    with open(os.path.join(render_dir, name + ".yaml")) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def one(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def config_keys_documented(text):
    """section.key for every key in the TOML blocks of a Markdown file (comments and values ignored)."""
    keys = set()
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        section = ""
        for line in block.splitlines():
            # A commented-out example ("# token = ...") documents its key too.
            line = re.sub(r"^#\s*(?=[a-z_]+\s*=)", "", line.strip()).split("#", 1)[0].strip()
            if m := re.fullmatch(r"\[\[?([a-z_]+)\]\]?", line):
                section = m.group(1)
            elif m := re.match(r"([a-z_]+)\s*=", line):
                keys.add(f"{section}.{m.group(1)}")
    return keys


with open(interface_md) as f:
    interface_keys = config_keys_documented(f.read())
with open(readme_md) as f:
    readme_keys = config_keys_documented(f.read().split("## Configuration", 1)[1].split("\n## ", 1)[0])


def duration_seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def check_pgward(label, objects, pod_spec, container):
    """The pgward container of a pod, and the ConfigMap it runs with."""
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    check(f"{label}: container ports postgres 6432 and admin 9930",
          ports.get("postgres") == 6432 and ports.get("admin") == 9930, str(ports))

    def probe(kind):
        get = container.get(kind, {}).get("httpGet", {})
        port = get.get("port")
        return get.get("path"), ports.get(port, port)

    check(f"{label}: readiness probe GET /health/ready on the admin port", probe("readinessProbe") == ("/health/ready", 9930),
          str(probe("readinessProbe")))
    check(f"{label}: liveness probe GET /health/live on the admin port", probe("livenessProbe") == ("/health/live", 9930),
          str(probe("livenessProbe")))

    # Config: args --config PATH, PATH inside a volume mounted from the rendered ConfigMap.
    args = container.get("args", [])
    check(f"{label}: runs --config", len(args) == 2 and args[0] == "--config", str(args))
    config_path = args[-1]
    mount = next((m for m in container.get("volumeMounts", []) if config_path.startswith(m["mountPath"] + "/")), None)
    if not check(f"{label}: {config_path} is on a mounted volume", mount is not None):
        return None
    volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    cm_name = volume.get("configMap", {}).get("name")
    if not check(f"{label}: the volume is the rendered ConfigMap {cm_name}", cm_name in config_maps, str(list(config_maps))):
        return None
    data = config_maps[cm_name]["data"]
    file_name = config_path[len(mount["mountPath"]) + 1:]
    if not check(f"{label}: the ConfigMap has {file_name}", file_name in data, str(list(data))):
        return None
    config = tomllib.loads(data[file_name])

    # Every key is a user-facing name; keys only the README lists yet are named.
    keys = {f"{s}.{k}" for s, table in config.items() if isinstance(table, dict) for k in table}
    keys |= {f"database.{k}" for db in config.get("database", []) for k in db}
    unknown = sorted(k for k in keys if k not in interface_keys and k not in readme_keys)
    check(f"{label}: every config key is in interface.md or README ({len(keys)} keys)", not unknown, str(unknown))
    for key in sorted(k for k in keys if k not in interface_keys and k in readme_keys):
        print(f"  note: {label}: {key} is documented in README.md but not yet in interface.md")
    check(f"{label}: [proxy] listen port is the postgres port", port_of(config["proxy"]["listen"]) == ports.get("postgres"))
    check(f"{label}: [admin] listen port is the admin port", port_of(config["admin"]["listen"]) == ports.get("admin"))
    check(f"{label}: admin listens beyond loopback (kubelet probes the pod IP)",
          not config["admin"]["listen"].startswith("127."))

    # Secrets: every env:VAR of the config files comes from a Secret through env:.
    env = {e["name"]: e for e in container.get("env", [])}
    referenced = sorted(set(re.findall(r'"env:([A-Za-z_][A-Za-z0-9_]*)"', "\n".join(data.values()))))
    from_secret = [v for v in referenced if "secretKeyRef" in env.get(v, {}).get("valueFrom", {})]
    check(f"{label}: {', '.join(referenced)} come from a Secret via env:", referenced and from_secret == referenced,
          f"referenced {referenced}, from a Secret {from_secret}")

    # pgward --check-config on the rendered files, with the Secret's variables set to stand-ins.
    folder = os.path.join(work_dir, label)
    os.makedirs(folder, exist_ok=True)
    for name, text in data.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    environment = dict(os.environ, **{v: "stand-in" for v in referenced})
    result = subprocess.run([pgward, "--check-config", os.path.join(folder, file_name)], env=environment,
                            capture_output=True, text=True)
    check(f"{label}: pgward --check-config accepts the rendered {file_name}", result.returncode == 0,
          (result.stdout + result.stderr).strip())

    # SIGTERM drain fits the grace period after the preStop.
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else None
    shutdown = duration_seconds(config["proxy"].get("shutdown_timeout", "30s"))
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    if check(f"{label}: a preStop sleep", sleep is not None, str(pre_stop)):
        check(f"{label}: preStop {sleep} s + shutdown_timeout {shutdown:g} s < terminationGracePeriodSeconds {grace}",
              sleep + shutdown < grace)
    check(f"{label}: runs as a non-root user", container.get("securityContext", {}).get("runAsNonRoot") is True)
    return config


# (a) sidecar
objects = load("sidecar")
deployment = one(objects, "Deployment")
pod = deployment["spec"]["template"]["spec"]
sidecars = [c for c in pod.get("initContainers", []) if c["name"] == "pgward"]
if check("sidecar: pgward is an init container", len(sidecars) == 1):
    sidecar = sidecars[0]
    check("sidecar: restartPolicy Always (a native sidecar)", sidecar.get("restartPolicy") == "Always")
    check("sidecar: a startup probe holds the application back until pgward serves",
          sidecar.get("startupProbe", {}).get("httpGet", {}).get("path") == "/health/live")
    check_pgward("sidecar", objects, pod, sidecar)
    app = pod["containers"][0]
    check("sidecar: the application connects to pgward on 127.0.0.1:6432",
          any("127.0.0.1:6432" in str(e.get("value", "")) for e in app.get("env", [])))
sidecar_pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

# (b) central tier
objects = load("central")
deployment = one(objects, "Deployment")
service = one(objects, "Service")
pdb = one(objects, "PodDisruptionBudget")
pod = deployment["spec"]["template"]["spec"]
labels = deployment["spec"]["template"]["metadata"]["labels"]
container = next(c for c in pod["containers"] if c["name"] == "pgward")
config = check_pgward("central", objects, pod, container)
container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
check("central: the Service selects the pods", service["spec"]["selector"].items() <= labels.items())
service_ports = {p["name"]: p for p in service["spec"]["ports"]}
check("central: the Service exposes 6432 and 9930 to the named container ports",
      all(service_ports.get(n, {}).get("port") == container_ports[n] and service_ports[n]["targetPort"] == n
          for n in ("postgres", "admin")), str(service_ports))
check("central: the PodDisruptionBudget selects the pods",
      pdb["spec"]["selector"]["matchLabels"].items() <= labels.items())
replicas = deployment["spec"]["replicas"]
check(f"central: {replicas} replicas, the budget lets at most one go at a time",
      replicas >= 2 and pdb["spec"].get("maxUnavailable") == 1)
if config:
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    size = config["pool"]["size"]
    pools = sum(1 for _ in config["database"])  # one server user per database here
    worst = (replicas + rolling["maxSurge"] + 1) * pools * size
    check(f"central: (replicas {replicas} + maxSurge {rolling['maxSurge']} + 1 draining) x {pools} pools x size {size}"
          f" = {worst} <= {SERVER_CONNECTION_BUDGET} server connections", worst <= SERVER_CONNECTION_BUDGET)
    shutdown = duration_seconds(config["proxy"]["shutdown_timeout"])
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    check(f"central: minReadySeconds >= preStop + shutdown_timeout (one pod drains at a time)",
          deployment["spec"].get("minReadySeconds", 0) >= pre_stop + shutdown)

# (c) monitoring
objects = load("monitoring")
pod_monitor = one(objects, "PodMonitor")
service_monitor = one(objects, "ServiceMonitor")
endpoint = pod_monitor["spec"]["podMetricsEndpoints"][0]
check("monitoring: the PodMonitor selects the sidecar's pods",
      pod_monitor["spec"]["selector"]["matchLabels"].items() <= sidecar_pod_labels.items())
check("monitoring: the PodMonitor scrapes /metrics on the port named admin",
      endpoint["port"] == "admin" and endpoint["path"] == "/metrics")
check("monitoring: the PodMonitor sends the sidecar's admin token",
      endpoint["authorization"]["credentials"] == {"name": "app-db", "key": "admin-token"})
endpoint = service_monitor["spec"]["endpoints"][0]
check("monitoring: the ServiceMonitor selects the central tier's Service",
      service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items())
check("monitoring: the ServiceMonitor scrapes /metrics on the Service port named admin",
      endpoint["port"] == "admin" and endpoint["path"] == "/metrics" and "admin" in service_ports)
token_ref = next(e for e in container["env"] if e["name"] == "PGWARD_ADMIN_TOKEN")["valueFrom"]["secretKeyRef"]
check("monitoring: the ServiceMonitor sends the central tier's admin token",
      endpoint["authorization"]["credentials"] == token_ref)

sys.exit(1 if failures else 0)
