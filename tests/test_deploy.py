"""The deployment files agree with the code.

docker-compose.yml, k8s/*.yaml and the Dockerfile repeat facts the code owns: service
names and ports (services/kit/catalogue.py) and environment variable names
(services/kit/config.py). These tests read the files (no Docker, no cluster, no network)
and fail when one of them drifts: a wrong port, an unknown variable, a probe on the
wrong port, a dependency on a service without a healthcheck, a pod that is not hardened.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.kit.bus import ALL_TOPICS
from services.kit.catalogue import GATEWAY_PORT, SERVICES, SERVICES_BY_NAME, ServiceSpec
from services.kit.config import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "k8s"
DOCKERFILE = ROOT / "Dockerfile"

SERVICE_UID = 10001
KNOWN_ENV = {name.upper() for name in Settings.model_fields} | {s.address_env for s in SERVICES}
ADDR_ENV = {s.address_env: s for s in SERVICES}

SERVICE_IDS = [s.name for s in SERVICES]
params = pytest.mark.parametrize("spec", SERVICES, ids=SERVICE_IDS)


# --------------------------------------------------------------------------- helpers


def _load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _load_k8s() -> dict[str, list[dict[str, Any]]]:
    docs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load_compose()


@pytest.fixture(scope="module")
def k8s() -> dict[str, list[dict[str, Any]]]:
    return _load_k8s()


def _k8s_objects(k8s: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind across the applied files (kustomization, example secret excluded)."""
    found: dict[str, dict[str, Any]] = {}
    for fname, docs in k8s.items():
        if fname in {"kustomization.yaml", "secrets.example.yaml"}:
            continue
        for doc in docs:
            if doc.get("kind") == kind:
                name = doc["metadata"]["name"]
                assert name not in found, f"{kind} {name} defined twice"
                found[name] = doc
    return found


def _parse_port_mapping(entry: Any) -> tuple[int, int]:
    """A compose `ports` entry -> (published, target)."""
    if isinstance(entry, dict):
        return int(entry["published"]), int(entry["target"])
    parts = str(entry).split("/")[0].split(":")
    assert len(parts) in (2, 3), f"port {entry!r} must publish host:container"
    return int(parts[-2]), int(parts[-1])


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    assert host and port.isdigit(), f"{value!r} is not host:port"
    return host, int(port)


def _duration_seconds(value: str) -> float:
    total, rest = 0.0, value
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        rest = rest.replace(amount + unit, "", 1)
    assert rest == "" and value, f"bad duration {value!r}"
    return total


def _check_env(where: str, env: dict[str, Any]) -> None:
    """Names are settings; <SERVICE>_ADDR values name that service and its port; the
    values validate as Settings would at start."""
    unknown = sorted(set(env) - KNOWN_ENV)
    assert not unknown, f"{where}: unknown environment variables {unknown}"
    for name, value in env.items():
        if name in ADDR_ENV and value is not None:
            target = ADDR_ENV[name]
            assert _host_port(str(value)) == (target.name, target.port), (
                f"{where}: {name}={value} but {target.name} listens on {target.name}:{target.port}"
            )
    values = {k.lower(): v for k, v in env.items() if v is not None and k not in ADDR_ENV}
    Settings.model_validate(values)  # raises on a malformed value


# --------------------------------------------------------------------------- compose


def _compose_learnflow_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Compose services built from this repository's Dockerfile."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


# Jobs built from the same image beside the servers.
COMPOSE_JOBS = {"retention"}


def test_compose_builds_only_catalogue_services(compose: dict[str, Any]) -> None:
    assert set(_compose_learnflow_services(compose)) == set(SERVICES_BY_NAME) | COMPOSE_JOBS


def test_compose_runs_the_retention_job_on_a_schedule(compose: dict[str, Any]) -> None:
    job = compose["services"]["retention"]
    assert job["entrypoint"] == ["learnflow", "purge", "--every"]
    assert job["environment"]["DATABASE_URL"].startswith("postgresql://")
    assert job["read_only"] is True and job["cap_drop"] == ["ALL"]


def test_k8s_runs_the_retention_job_daily_as_a_hardened_cronjob(
    k8s: dict[str, list[dict[str, Any]]],
) -> None:
    cronjob = _k8s_objects(k8s, "CronJob")["retention"]
    spec = cronjob["spec"]
    assert len(spec["schedule"].split()) == 5
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["learnflow", "purge"]
    assert {e["name"] for e in container["env"]} == {"DATABASE_URL"}
    assert pod["securityContext"]["runAsUser"] == SERVICE_UID
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


@params
def test_compose_service_matches_catalogue(compose: dict[str, Any], spec: ServiceSpec) -> None:
    svc = compose["services"][spec.name]
    assert svc.get("command") == [spec.name], "runs `learnflow serve <name>`"
    build = svc["build"]
    target = build.get("target") if isinstance(build, dict) else None
    assert target == (spec.name if spec.name in ("sandbox", "concepts") else "runtime")
    published = [_parse_port_mapping(p) for p in svc.get("ports", [])]
    assert published == [(spec.port, spec.port)], f"publish {spec.port}:{spec.port}"
    assert svc["healthcheck"]["test"] == ["CMD", "learnflow", "probe", str(spec.port)]
    # GRPC_PORT, when set, must not move the server off the port everything else uses.
    env = svc.get("environment") or {}
    assert env.get("GRPC_PORT") in (None, str(spec.port), spec.port)


@params
def test_compose_env_is_known_settings(compose: dict[str, Any], spec: ServiceSpec) -> None:
    svc = compose["services"][spec.name]
    env = svc.get("environment") or {}
    assert isinstance(env, dict), "use the mapping form of environment"
    _check_env(f"compose {spec.name}", env)


@params
def test_compose_env_points_at_compose_services(compose: dict[str, Any], spec: ServiceSpec) -> None:
    services = compose["services"]
    env = services[spec.name].get("environment") or {}
    needs = {}
    for key in ("DATABASE_URL", "REDIS_URL"):
        if env.get(key):
            url = urlsplit(env[key])
            needs[key] = (url.hostname, url.port)
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        for server in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            needs["KAFKA_BOOTSTRAP_SERVERS"] = _host_port(server)
    for key, (host, _port) in needs.items():
        assert host in services, f"{spec.name}: {key} names {host}, not a compose service"
        deps = services[spec.name].get("depends_on") or {}
        assert host in deps or (host == "kafka" and "kafka-init" in deps), (
            f"{spec.name} uses {host} ({key}) without depending on it"
        )
    if "KAFKA_BOOTSTRAP_SERVERS" in needs:
        host, port = needs["KAFKA_BOOTSTRAP_SERVERS"]
        advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        assert f"//{host}:{port}" in advertised, "bootstrap address is not an advertised listener"
    # The JWKS the server verifies tokens with is mounted where JWKS_PATH says.
    targets = [
        v["target"] if isinstance(v, dict) else v.split(":")[1]
        for v in services[spec.name].get("volumes", [])
    ]
    assert env.get("JWKS_PATH") in targets


@params
def test_compose_stop_grace_exceeds_shutdown_grace(
    compose: dict[str, Any], spec: ServiceSpec
) -> None:
    svc = compose["services"][spec.name]
    grace = float((svc.get("environment") or {}).get("SHUTDOWN_GRACE_SECONDS", 10.0))
    stop = _duration_seconds(svc.get("stop_grace_period", "10s"))
    assert stop > grace, f"{spec.name}: stop_grace_period {stop}s <= drain {grace}s"


@params
def test_compose_service_is_hardened(compose: dict[str, Any], spec: ServiceSpec) -> None:
    svc = compose["services"][spec.name]
    assert svc.get("read_only") is True
    assert "ALL" in svc.get("cap_drop", [])
    assert "no-new-privileges:true" in svc.get("security_opt", [])
    assert "user" not in svc or str(svc["user"]).split(":")[0] not in {"0", "root"}


def test_compose_depends_on_healthy_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions (long form)"
        for dep, rule in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = rule.get("condition")
            if condition == "service_healthy":
                test = (services[dep].get("healthcheck") or {}).get("test")
                assert test and test != ["NONE"], (
                    f"{name} waits for {dep}, which has no healthcheck"
                )
            else:
                assert condition == "service_completed_successfully", (
                    f"{name} -> {dep}: wait for health or completion, not mere start"
                )
                assert services[dep].get("restart", "no") == "no", f"{dep} is not a one-shot job"


def test_compose_gateway(compose: dict[str, Any]) -> None:
    envoy = compose["services"]["envoy"]
    assert [_parse_port_mapping(p) for p in envoy["ports"]] == [(GATEWAY_PORT, GATEWAY_PORT)]
    deps = envoy.get("depends_on") or {}
    assert set(deps) == set(SERVICES_BY_NAME)
    assert all(rule["condition"] == "service_healthy" for rule in deps.values())
    mounts = [v for v in envoy["volumes"] if isinstance(v, str)]
    for source in ("./gateway", "./gen"):
        assert any(m.startswith(source + ":") and m.endswith(":ro") for m in mounts), source


def test_compose_kafka_single_node_and_topics(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for key, value in kafka.items():
        if key.endswith("REPLICATION_FACTOR") or key.endswith("MIN_ISR"):
            assert int(value) == 1, key
    init = compose["services"]["kafka-init"]
    script = " ".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=True)
    words = set(lexer)
    missing = [t for t in ALL_TOPICS if t not in words]
    assert not missing, f"kafka-init does not create {missing}"


# --------------------------------------------------------------------------- kubernetes


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def _shutdown_grace(k8s: dict[str, list[dict[str, Any]]]) -> float:
    for cm in _k8s_objects(k8s, "ConfigMap").values():
        if "SHUTDOWN_GRACE_SECONDS" in (cm.get("data") or {}):
            return float(cm["data"]["SHUTDOWN_GRACE_SECONDS"])
    return float(Settings.model_fields["shutdown_grace_seconds"].default)


def _example_secret(k8s: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (secret,) = [d for d in k8s["secrets.example.yaml"] if d.get("kind") == "Secret"]
    return secret


def _container_env(
    k8s: dict[str, list[dict[str, Any]]], container: dict[str, Any]
) -> dict[str, Any]:
    """The environment a container sees: envFrom ConfigMaps, then env entries."""
    configmaps = _k8s_objects(k8s, "ConfigMap")
    secret = _example_secret(k8s)
    secret_data = secret.get("stringData") or {}
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        assert "prefix" not in source, "a prefix would rename the settings"
        ref = source.get("configMapRef") or source.get("secretRef")
        assert ref, source
        if "configMapRef" in source:
            assert ref["name"] in configmaps, f"envFrom unknown ConfigMap {ref['name']}"
            env.update(configmaps[ref["name"]].get("data") or {})
        else:
            assert ref["name"] == secret["metadata"]["name"]
            env.update(secret_data)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            key_ref = ref["secretKeyRef"]
            assert key_ref["name"] == secret["metadata"]["name"], key_ref
            assert key_ref["key"] in secret_data, f"secrets.example.yaml lacks {key_ref['key']}"
            env[item["name"]] = secret_data[key_ref["key"]]
        elif "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            env[item["name"]] = configmaps[key_ref["name"]]["data"][key_ref["key"]]
        else:
            env[item["name"]] = None
    return env


def test_k8s_files_are_generated_from_the_catalogue() -> None:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S_DIR / "generate.py")
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generator  # dataclasses look their module up there
    try:
        spec.loader.exec_module(generator)
        rendered = generator.render()
    finally:
        del sys.modules[spec.name]
    stale = [
        name
        for name, content in rendered.items()
        if not (K8S_DIR / name).exists() or (K8S_DIR / name).read_text() != content
    ]
    assert not stale, f"run `.venv/bin/python k8s/generate.py`: stale {stale}"


def test_k8s_kustomization_lists_every_manifest(k8s: dict[str, list[dict[str, Any]]]) -> None:
    (kustomization,) = k8s["kustomization.yaml"]
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    expected = set(k8s) - {"kustomization.yaml", "secrets.example.yaml"}
    assert set(resources) == expected
    assert "secrets.example.yaml" not in resources, "the example secret must not be applied"
    assert {f"{s.name}.yaml" for s in SERVICES} <= set(resources)


def test_k8s_example_secret_is_marked(k8s: dict[str, list[dict[str, Any]]]) -> None:
    text = (K8S_DIR / "secrets.example.yaml").read_text()
    assert "EXAMPLE" in text
    secret = _example_secret(k8s)
    assert set(secret["stringData"]) == {"DATABASE_URL", "OPENAI_API_KEY"}


@params
def test_k8s_deployment_and_service_match_catalogue(
    k8s: dict[str, list[dict[str, Any]]], spec: ServiceSpec
) -> None:
    docs = k8s[f"{spec.name}.yaml"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", spec.name), ("Service", spec.name)} <= kinds
    deployment = _k8s_objects(k8s, "Deployment")[spec.name]
    service = _k8s_objects(k8s, "Service")[spec.name]

    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()

    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container.get("args") == [spec.name], "runs `learnflow serve <name>`"
    expected_image = {"sandbox": "learnflow-sandbox", "concepts": "learnflow-concepts"}.get(
        spec.name, "learnflow"
    )
    assert container["image"].split(":")[0] == expected_image
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == spec.port

    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == spec.port
    assert service_port.get("targetPort", spec.port) in (spec.port, container_port.get("name"))

    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe == "startupProbe" and probe not in container:
            continue
        assert container[probe]["grpc"]["port"] == spec.port, f"{probe} on the wrong port"

    env = _container_env(k8s, container)
    assert env.get("GRPC_PORT") in (None, str(spec.port))


@params
def test_k8s_env_is_known_settings(k8s: dict[str, list[dict[str, Any]]], spec: ServiceSpec) -> None:
    deployment = _k8s_objects(k8s, "Deployment")[spec.name]
    for container in _containers(deployment):
        env = _container_env(k8s, container)
        _check_env(f"k8s {spec.name}", env)
        # The JWKS the server verifies tokens with is mounted where JWKS_PATH says.
        jwks = env.get("JWKS_PATH")
        assert jwks, f"{spec.name}: JWKS_PATH not set"
        mounts = [m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])]
        assert str(Path(jwks).parent) in mounts


def test_k8s_addresses_name_existing_services(k8s: dict[str, list[dict[str, Any]]]) -> None:
    services = _k8s_objects(k8s, "Service")
    for cm in _k8s_objects(k8s, "ConfigMap").values():
        for key, value in (cm.get("data") or {}).items():
            if key in ADDR_ENV:
                host, port = _host_port(value)
                assert host in services, f"{key}={value}: no Service {host}"
                assert port in [p["port"] for p in services[host]["spec"]["ports"]]


def test_k8s_pods_are_hardened(k8s: dict[str, list[dict[str, Any]]]) -> None:
    deployments = _k8s_objects(k8s, "Deployment")
    assert set(SERVICES_BY_NAME) | {"gateway"} <= set(deployments)
    grace = _shutdown_grace(k8s)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        ctx = pod["securityContext"]
        assert ctx.get("runAsNonRoot") is True, name
        assert isinstance(ctx.get("runAsUser"), int) and ctx["runAsUser"] > 0, name
        if name in SERVICES_BY_NAME:
            assert ctx["runAsUser"] == SERVICE_UID, f"{name}: the image's user is {SERVICE_UID}"
        assert isinstance(ctx.get("fsGroup"), int), name
        seccomp = ctx.get("seccompProfile", {})
        assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}, name
        if seccomp["type"] == "Localhost":
            assert seccomp.get("localhostProfile"), name
        assert pod.get("automountServiceAccountToken") is False, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), name
        if name in SERVICES_BY_NAME:
            assert pod["terminationGracePeriodSeconds"] > grace, (
                f"{name}: terminationGracePeriodSeconds must exceed SHUTDOWN_GRACE_SECONDS"
            )
        for container in _containers(deployment):
            where = f"{name}/{container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert not sc.get("privileged"), where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
            assert not sc.get("capabilities", {}).get("add"), where
            assert sc.get("runAsUser", ctx["runAsUser"]) != 0, where
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(section, {})), (
                    f"{where}: resources.{section} needs cpu and memory"
                )


def test_k8s_gateway(k8s: dict[str, list[dict[str, Any]]]) -> None:
    deployment = _k8s_objects(k8s, "Deployment")["gateway"]
    service = _k8s_objects(k8s, "Service")["gateway"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("envoyproxy/envoy")
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert GATEWAY_PORT in ports.values()
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == GATEWAY_PORT
    assert service_port["targetPort"] in (GATEWAY_PORT, *(n for n in ports if n))
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    configmaps = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    assert {"learnflow-gateway", "learnflow-jwks"} <= configmaps


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_stages() -> list[dict[str, Any]]:
    """Stages in order: name, base image (ARGs resolved), instructions (keyword, args)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            stage = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append({"name": stage, "base": base, "instructions": []})
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1]["instructions"].append((keyword, rest))
    return stages


def _effective(stages: list[dict[str, Any]], index: int, keyword: str) -> str | None:
    """The last value of an inherited setting (USER, ENTRYPOINT) for a stage."""
    by_name = {s["name"]: i for i, s in enumerate(stages) if s["name"]}
    chain = []
    i: int | None = index
    while i is not None:
        chain.append(stages[i])
        i = by_name.get(stages[i]["base"])
    for stage in chain:  # nearest stage first
        values = [rest for kw, rest in stage["instructions"] if kw == keyword]
        if values:
            return str(values[-1])
    return None


def _is_non_root(user: str | None) -> bool:
    if not user:
        return False
    uid = user.split(":")[0]
    return uid not in {"0", "root"}


def test_dockerfile_final_stage_runs_learnflow_serve_as_non_root() -> None:
    stages = _dockerfile_stages()
    final = len(stages) - 1
    user = _effective(stages, final, "USER")
    assert _is_non_root(user), f"final stage runs as {user!r}"
    assert user and user.split(":")[0] == str(SERVICE_UID)
    entrypoint = _effective(stages, final, "ENTRYPOINT")
    assert entrypoint and json.loads(entrypoint) == ["learnflow", "serve"]
    assert _effective(stages, final, "HEALTHCHECK") == "NONE"


def test_dockerfile_stages() -> None:
    stages = _dockerfile_stages()
    by_name = {s["name"]: s for s in stages}
    for stage in stages:  # every image from a pinned base or another stage
        assert stage["base"] in by_name or stage["base"] in {
            "python:3.11-slim-bookworm",
            "node:20-bookworm-slim",  # only the node binary is copied out of it
        }
    builder = by_name["builder"]
    runs = " ".join(rest for kw, rest in builder["instructions"] if kw == "RUN")
    assert "pip install --no-cache-dir ." in runs
    sandbox = stages.index(by_name["sandbox"])
    assert "bubblewrap" in " ".join(
        rest for kw, rest in by_name["sandbox"]["instructions"] if kw == "RUN"
    )
    assert _is_non_root(_effective(stages, sandbox, "USER"))
    assert json.loads(_effective(stages, sandbox, "ENTRYPOINT") or "null") == ["learnflow", "serve"]
    concepts = stages.index(by_name["concepts"])
    assert "ci --no-audit" in " ".join(
        rest for kw, rest in by_name["concepts"]["instructions"] if kw == "RUN"
    )
    assert _is_non_root(_effective(stages, concepts, "USER"))


def test_compose_build_targets_exist(compose: dict[str, Any]) -> None:
    names = {s["name"] for s in _dockerfile_stages()}
    for name, svc in _compose_learnflow_services(compose).items():
        build = svc["build"]
        if isinstance(build, dict) and "target" in build:
            assert build["target"] in names, f"{name}: no Dockerfile stage {build['target']}"
