"""The deployment files agree with the code and with each other.

Pure file checks (PyYAML; no cluster, no Docker):

- the base ConfigMap, and the production ConfigMap with its Secret example, hold exactly
  the settings of `stream.config.SETTINGS_DOC`; docker-compose names only known settings;
  all their values pass `Settings.from_env`; the README's Configuration section lists all;
- probes, Service, ServiceMonitor, PodDisruptionBudget and the KEDA ScaledObject point at
  the Deployment's pods and its `metrics` port;
- the topic scripts (Kubernetes Job, compose `topic-init`) create exactly the topics
  `Settings` derives, all with the main topic's partitions, and the autoscaler never
  outgrows them;
- the image is named once (the base's `images:`), and docs/deploy.md builds and pushes that
  name; its grace period and rollout numbers are the manifests';
- the Grafana dashboard and the alert rules (compose's file, the PrometheusRule: the same)
  query only series that `stream.observability.metrics` exposes;
- the Dockerfile's `runtime` target leaves out `stream/devkit` (a devkit command there
  fails with one line, every other module imports), `devkit` has it, and compose builds
  `devkit` only for devkit commands.

The Kubernetes checks run on `_kustomize_build`, a small Python rendering of
`kustomize build` that knows just what our kustomizations use, for the base and for the
production overlay.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import stream.observability.metrics
from stream.cli import COMMANDS
from stream.config import SETTINGS_DOC, Settings, parse_duration

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
PRODUCTION = DEPLOY / "overlays" / "production"
COMPOSE = ROOT / "docker-compose.yml"
GRAFANA = DEPLOY / "grafana"
PROMETHEUS = DEPLOY / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"

# Always secret. STREAM_MONGO_URL joins them wherever it carries credentials (production).
SECRET_SETTINGS = {
    "STREAM_API_TOKEN", "STREAM_KAFKA_SASL_PASSWORD", "STREAM_KAFKA_SSL_KEY_PASSWORD",
}
METRICS_PORT = int(SETTINGS_DOC["STREAM_METRICS_PORT"][0])

# Strategic-merge list keys of the built-in kinds our overlay patches; any other kind is a
# custom resource, which kustomize patches as a JSON merge patch (lists replaced whole).
_STRATEGIC_KINDS = {"ConfigMap", "StatefulSet", "Job"}
_MERGE_KEYS = {
    "containers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
# What a pod needs after the drain: the final commit and stopping the clients.
COMMIT_AND_LEAVE_S = 10
# Set in the pod spec, one value per pod: not in the ConfigMap.
PER_POD_SETTINGS = {"STREAM_KAFKA_GROUP_INSTANCE_ID"}
# A static member's restart beyond its grace period: the pod is recreated, the container
# starts, `stream run` connects and joins. The session timeout must cover it.
POD_RESTART_S = 20
DEVKIT_DIR = "stream/devkit"
# What the runtime image has in the devkit's place (Dockerfile, runtime-builder).
DEVKIT_STAND_IN = "deploy/docker/devkit_absent.py"
DEVKIT_COMMANDS = {
    command for command, (module, _) in COMMANDS.items() if module.startswith("stream.devkit")
}
_CREATE_TOPIC = re.compile(r"^\s*create (\S+) (\d+)\s*$", re.MULTILINE)
# What PromQL has besides metric names: strings, label matchers, ranges, grouping clauses.
_PROMQL_NOISE = re.compile(
    r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]'
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)
_PROMQL_NAME = re.compile(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()")
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def _load_all(path: Path) -> list[Any]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _load_one(path: Path) -> Any:
    (doc,) = _load_all(path)
    return doc


def _merge(base: Any, patch: Any, merge_keys: dict[str, str]) -> Any:
    """Strategic merge (with `merge_keys`) or JSON merge patch (without): null deletes."""
    if not (isinstance(base, dict) and isinstance(patch, dict)):
        return copy.deepcopy(patch)
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif key in merge_keys and isinstance(value, list) and key in merged:
            merged[key] = _merge_list(merged[key], value, merge_keys[key], merge_keys)
        else:
            merged[key] = _merge(merged.get(key), value, merge_keys)
    return merged


def _merge_list(
    base: list[Obj], patch: list[Obj], key: str, merge_keys: dict[str, str]
) -> list[Obj]:
    merged = list(base)
    for item in patch:
        index = next((i for i, old in enumerate(merged) if old[key] == item[key]), None)
        if index is None:
            merged.append(copy.deepcopy(item))
        else:
            merged[index] = _merge(merged[index], item, merge_keys)
    return merged


def _split_image(image: str) -> tuple[str, str]:
    name, sep, tag = image.rpartition(":")
    return (name, tag) if sep and "/" not in tag else (image, "")


def _pod_spec(obj: Obj) -> Obj | None:
    if obj["kind"] in ("StatefulSet", "Job"):
        spec: Obj = obj["spec"]["template"]["spec"]
        return spec
    return None


def _kustomize_build(directory: Path) -> list[Obj]:
    """Resources (files and directories), then patches, namespace, images and replicas."""
    kustomization = _load_one(directory / "kustomization.yaml")
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects += _kustomize_build(path) if path.is_dir() else _load_all(path)
    for entry in kustomization.get("patches", []):
        for patch in _load_all(directory / entry["path"]):
            target = _one(objects, patch["kind"], patch["metadata"]["name"])
            keys = _MERGE_KEYS if patch["kind"] in _STRATEGIC_KINDS else {}
            objects[objects.index(target)] = _merge(target, patch, keys)
    namespace = kustomization.get("namespace")
    for obj in objects:
        if namespace and obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        elif namespace:
            obj["metadata"]["namespace"] = namespace
        pod = _pod_spec(obj)
        for container in pod["containers"] if pod else []:
            name, tag = _split_image(container["image"])
            for image in kustomization.get("images", []):
                if image["name"] == name:
                    new_name, new_tag = image.get("newName", name), image.get("newTag", tag)
                    container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
    for entry in kustomization.get("replicas", []):
        _one(objects, "StatefulSet", entry["name"])["spec"]["replicas"] = entry["count"]
    return objects


def _one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [
        obj for obj in objects if obj["kind"] == kind and name in (None, obj["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _container(objects: list[Obj], kind: str) -> Obj:
    pod = _pod_spec(_one(objects, kind))
    assert pod is not None
    container: Obj
    (container,) = pod["containers"]
    return container


def _created_topics(script: str) -> dict[str, int]:
    return {topic: int(partitions) for topic, partitions in _CREATE_TOPIC.findall(script)}


def _topics(settings: Settings) -> set[str]:
    return {settings.topic, *settings.retry_topics, settings.dlq_topic}


def _secret_examples() -> dict[str, dict[str, str]]:
    docs = _load_all(PRODUCTION / "secret.example.yaml")
    return {doc["metadata"]["name"]: doc["stringData"] for doc in docs}


def _walk(node: Any) -> Iterator[Obj]:
    """Every mapping inside `node`, depth first."""
    if isinstance(node, dict):
        yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)


def _compose() -> Obj:
    compose: Obj = _load_one(COMPOSE)
    return compose


def _metric_names(expr: str) -> set[str]:
    names = set(_PROMQL_NAME.findall(_PROMQL_NOISE.sub(" ", expr)))
    return names - _PROMQL_KEYWORDS


def _exposed_series() -> set[str]:
    """Series names as scraped: prometheus_client adds `_total` to counters itself."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for attribute in stream.observability.metrics.__all__
        if isinstance(getattr(stream.observability.metrics, attribute), MetricWrapperBase)
        for family in getattr(stream.observability.metrics, attribute).describe()
        for suffix in suffixes[family.type]
    }


def _canonical(node: Any) -> Any:
    """`node` with every list sorted, so that merge order does not matter."""
    if isinstance(node, dict):
        return {key: _canonical(value) for key, value in node.items()}
    if isinstance(node, list):
        items = (_canonical(item) for item in node)
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return node


@dataclass(frozen=True)
class _Stage:
    parent: str
    instructions: dict[str, list[str]]


def _dockerfile_stages() -> dict[str, _Stage]:
    """Stages by name, in file order: continuation lines joined, comments dropped."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    stages: dict[str, _Stage] = {}
    for line in text.replace("\\\n", " ").splitlines():
        if not line.strip():
            continue
        name, args = line.split(maxsplit=1)
        if name.upper() == "FROM":
            parent, _as, stage = args.split()
            stages[stage] = _Stage(parent, {})
        else:
            stage_instructions = list(stages.values())[-1].instructions
            stage_instructions.setdefault(name.upper(), []).append(" ".join(args.split()))
    return stages


def _effective_instructions(stages: dict[str, _Stage], target: str) -> dict[str, list[str]]:
    """What `target` inherits from its parent stages, then its own, per instruction."""
    chain = []
    while target in stages:
        chain.insert(0, stages[target])
        target = stages[target].parent
    merged: dict[str, list[str]] = {"RUN": [], "COPY": []}
    for stage in chain:
        for name, args in stage.instructions.items():
            merged.setdefault(name, []).extend(args)
    return merged


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _docker_ignored(path: str) -> bool:
    """.dockerignore's verdict on `path`: the last pattern matching it or a parent wins."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in _dockerignore_patterns():
        negated = pattern.startswith("!")
        if any(fnmatch.fnmatchcase(prefix, pattern.removeprefix("!")) for prefix in prefixes):
            ignored = not negated
    return ignored


def _run_in(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python *args` with `tree` first on the path, as the image's virtualenv would have it."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def runtime_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as the runtime builder installs it (the Dockerfile's devkit steps)."""
    tree = tmp_path_factory.mktemp("runtime")
    shutil.copytree(ROOT / "stream", tree / "stream", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(tree / DEVKIT_DIR)
    (tree / DEVKIT_DIR).mkdir()
    shutil.copy(ROOT / DEVKIT_STAND_IN, tree / DEVKIT_DIR / "__init__.py")
    return tree


def _deploy_doc_section(title: str) -> str:
    text = (ROOT / "docs" / "deploy.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _yaml_files() -> list[Path]:
    files = [
        path for path in sorted(DEPLOY.rglob("*.y*ml")) if DEPLOY / "local" not in path.parents
    ]
    return [*files, COMPOSE]


@pytest.fixture(params=[BASE, PRODUCTION], ids=["base", "production"])
def kustomization(request: pytest.FixtureRequest) -> Path:
    directory: Path = request.param
    return directory


@pytest.fixture
def built(kustomization: Path) -> list[Obj]:
    return _kustomize_build(kustomization)


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses_to_objects(path: Path) -> None:
    docs = _load_all(path)
    assert docs
    assert all(isinstance(doc, dict) for doc in docs)


def test_base_configmap_holds_every_setting_but_the_secrets() -> None:
    data = _one(_load_all(BASE / "configmap.yaml"), "ConfigMap")["data"]
    assert set(data) == set(SETTINGS_DOC) - SECRET_SETTINGS - PER_POD_SETTINGS
    assert all(isinstance(value, str) for value in data.values()), "ConfigMap values are strings"
    Settings.from_env(data)


def test_production_config_and_secret_together_hold_every_setting() -> None:
    data = _one(_kustomize_build(PRODUCTION), "ConfigMap", "stream-config")["data"]
    secret = _secret_examples()["stream-secrets"]
    assert not set(data) & set(secret)
    assert set(data) | set(secret) == set(SETTINGS_DOC) - PER_POD_SETTINGS
    assert SECRET_SETTINGS | {"STREAM_MONGO_URL"} <= set(secret)
    assert all("CHANGE_ME" in value for value in secret.values()), "placeholders only"
    settings = Settings.from_env({**data, **secret})
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert parse_qs(urlsplit(settings.mongo_url).query)["tls"] == ["true"]


def test_production_ca_files_are_mounted_from_the_tls_secret() -> None:
    objects = _kustomize_build(PRODUCTION)
    data = _one(objects, "ConfigMap", "stream-config")["data"]
    examples = _secret_examples()
    mongo_query = parse_qs(urlsplit(examples["stream-secrets"]["STREAM_MONGO_URL"]).query)
    kafka_ca = Path(data["STREAM_KAFKA_SSL_CAFILE"])
    mongo_ca = Path(mongo_query["tlsCAFile"][0])
    for kind, ca_files in [("StatefulSet", [kafka_ca, mongo_ca]), ("Job", [kafka_ca])]:
        pod = _pod_spec(_one(objects, kind))
        assert pod is not None
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        container = _container(objects, kind)
        mounts = {Path(m["mountPath"]): m["name"] for m in container["volumeMounts"]}
        for ca_file in ca_files:
            assert secrets.get(mounts.get(ca_file.parent, "")) == "stream-tls", (kind, ca_file)
            assert ca_file.name in examples["stream-tls"]


def test_compose_processor_settings_are_known_and_point_at_the_services() -> None:
    services = _compose()["services"]
    env = services["processor"]["environment"]
    assert set(env) <= set(SETTINGS_DOC)
    assert all(isinstance(value, str) for value in env.values())
    settings = Settings.from_env(env)
    assert settings.kafka_bootstrap.split(":")[0] in services
    assert urlsplit(settings.mongo_url).hostname in services
    api = urlsplit(settings.api_url)
    upstream = services["upstream"]["command"]
    assert api.hostname == "upstream"
    assert api.port == int(upstream[upstream.index("--port") + 1])
    assert api.path == "/v1/parse"


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if "## Configuration" not in text:
        pytest.skip("README.md has no '## Configuration' section yet")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert [key for key in SETTINGS_DOC if key not in section] == []


def test_probes_use_the_metrics_port(built: list[Obj]) -> None:
    container = _container(built, "StatefulSet")
    data = _one(built, "ConfigMap", "stream-config")["data"]
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert port["containerPort"] == METRICS_PORT == int(data["STREAM_METRICS_PORT"])
    for probe, path in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ]:
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}


def test_service_monitor_budget_and_scaler_target_the_statefulset(built: list[Obj]) -> None:
    deployment = _one(built, "StatefulSet")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels
    service = _one(built, "Service")
    assert service["spec"]["selector"].items() <= pod_labels
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", METRICS_PORT, "metrics")
    monitor = _one(built, "ServiceMonitor")
    service_labels = service["metadata"]["labels"].items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    budget = _one(built, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels
    assert budget["spec"]["maxUnavailable"] == 1
    scaler = _one(built, "ScaledObject")
    target = scaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", deployment["metadata"]["name"])
    assert target["apiVersion"] == deployment["apiVersion"]
    assert deployment["spec"]["serviceName"] == service["metadata"]["name"]


def test_image_is_named_in_one_place_and_the_deploy_doc_builds_that_name() -> None:
    raw = _one(_load_all(BASE / "statefulset.yaml"), "StatefulSet")
    (container,) = raw["spec"]["template"]["spec"]["containers"]
    placeholder = container["image"]
    (image,) = _load_one(BASE / "kustomization.yaml")["images"]
    assert image["name"] == placeholder
    assert "images" not in _load_one(PRODUCTION / "kustomization.yaml"), "set in the base only"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image["newTag"] == version
    name = f"{image['newName']}:{image['newTag']}"
    for directory in (BASE, PRODUCTION):
        assert _container(_kustomize_build(directory), "StatefulSet")["image"] == name
    section = _deploy_doc_section("Kubernetes")
    assert re.findall(r"docker build --target runtime -t (\S+) \.", section) == [name]
    assert re.findall(r"docker push (\S+)", section) == [name]
    services = _compose()["services"]
    assert {_split_image(services[s]["image"])[0] for s in ("processor", "upstream")} == {
        placeholder
    }


def test_topic_scripts_create_the_topics_the_settings_derive() -> None:
    base = _kustomize_build(BASE)
    job_script = _container(base, "Job")["args"][0]
    compose = _compose()["services"]
    scripts = {
        "job": (job_script, _one(base, "ConfigMap", "stream-config")["data"]),
        "compose": (compose["topic-init"]["command"][0], compose["processor"]["environment"]),
    }
    for where, (script, env) in scripts.items():
        created = _created_topics(script)
        settings = Settings.from_env(env)
        assert set(created) == _topics(settings) == _topics(Settings()), where
        assert set(created.values()) == {created[settings.topic]}, "as many as the main topic"


def test_autoscaler_stays_within_the_main_topic_partitions(built: list[Obj]) -> None:
    data = _one(built, "ConfigMap", "stream-config")["data"]
    partitions = _created_topics(_container(built, "Job")["args"][0])
    scaler = _one(built, "ScaledObject")["spec"]
    (trigger,) = scaler["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert metadata["topic"] == data["STREAM_TOPIC"]
    assert metadata["consumerGroup"] == data["STREAM_GROUP_ID"]
    assert metadata["bootstrapServers"] == data["STREAM_KAFKA_BOOTSTRAP"]
    assert 1 <= scaler["minReplicaCount"] <= scaler["maxReplicaCount"]
    assert scaler["maxReplicaCount"] <= partitions[data["STREAM_TOPIC"]]
    assert _one(built, "StatefulSet")["spec"]["replicas"] <= scaler["maxReplicaCount"]
    if data["STREAM_KAFKA_SECURITY_PROTOCOL"] != "PLAINTEXT":
        auth = _one(built, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        examples = _secret_examples()
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in examples[ref["name"]], ref


def test_grace_period_outlasts_pre_stop_and_drain(built: list[Obj]) -> None:
    data = _one(built, "ConfigMap", "stream-config")["data"]
    drain_s = int(data["STREAM_DRAIN_TIMEOUT_MS"]) / 1000
    pod = _pod_spec(_one(built, "StatefulSet"))
    assert pod is not None
    sleep, seconds = _container(built, "StatefulSet")["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"
    grace_s = pod["terminationGracePeriodSeconds"]
    assert grace_s >= float(seconds) + drain_s + COMMIT_AND_LEAVE_S
    section = _deploy_doc_section("Kubernetes")
    assert f"`terminationGracePeriodSeconds: {grace_s}`" in section


def test_deploy_doc_states_the_rollout_and_disruption_numbers(built: list[Obj]) -> None:
    members = _one(built, "StatefulSet")["spec"]
    budget = _one(built, "PodDisruptionBudget")["spec"]
    section = " ".join(_deploy_doc_section("Kubernetes").split())
    assert members["updateStrategy"] == {"type": "RollingUpdate"}, "one pod at a time"
    assert f"`podManagementPolicy: {members['podManagementPolicy']}`" in section
    assert f"PodDisruptionBudget's `maxUnavailable: {budget['maxUnavailable']}`" in section


def test_each_member_is_static_and_its_restart_fits_the_session(built: list[Obj]) -> None:
    """Each pod's name is its group instance id, and a restart (grace period, then a new
    pod) ends before the session times out: the group does not rebalance for it."""
    container = _container(built, "StatefulSet")
    (instance_id,) = [e for e in container["env"] if e["name"] in PER_POD_SETTINGS]
    assert instance_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    data = _one(built, "ConfigMap", "stream-config")["data"]
    settings = Settings.from_env({**data, "STREAM_KAFKA_GROUP_INSTANCE_ID": "stream-processor-0"})
    pod = _pod_spec(_one(built, "StatefulSet"))
    assert pod is not None
    assert settings.session_timeout_s >= pod["terminationGracePeriodSeconds"] + POD_RESTART_S
    section = " ".join(_deploy_doc_section("Kubernetes").split())
    assert f"`STREAM_SESSION_TIMEOUT_MS: {data['STREAM_SESSION_TIMEOUT_MS']}`" in section


def test_compose_stop_grace_period_outlasts_the_drain() -> None:
    processor = _compose()["services"]["processor"]
    drain_s = Settings.from_env(processor["environment"]).drain_timeout_s
    assert parse_duration("stop_grace_period", processor["stop_grace_period"]) > drain_s


def test_kustomize_output_is_well_formed(kustomization: Path, built: list[Obj]) -> None:
    namespace = _load_one(kustomization / "kustomization.yaml")["namespace"]
    keys = [(obj["kind"], obj["metadata"]["name"]) for obj in built]
    assert len(keys) == len(set(keys)), "duplicate kind/name"
    for obj in built:
        assert obj["apiVersion"]
        assert obj["metadata"]["name"]
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == namespace
        else:
            assert obj["metadata"]["namespace"] == namespace, obj["kind"]
    config_maps = {name for kind, name in keys if kind == "ConfigMap"}
    for node in _walk(built):
        for ref in ("configMapRef", "configMapKeyRef"):
            if ref in node:
                assert node[ref]["name"] in config_maps, node


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_python_build_matches_kubectl_kustomize(kustomization: Path, built: list[Obj]) -> None:
    """Keeps `_kustomize_build` honest wherever the real kustomize is at hand."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(kustomization)], check=True, capture_output=True, text=True
    ).stdout
    real = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(rendered)}
    ours = {(o["kind"], o["metadata"]["name"]): o for o in built}
    assert _canonical(ours) == _canonical(real)


def test_production_calls_the_real_api() -> None:
    objects = _kustomize_build(PRODUCTION)
    settings_env = _one(objects, "ConfigMap", "stream-config")["data"]
    assert settings_env["STREAM_PROCESSOR"] == "http"
    assert settings_env["STREAM_API_URL"].startswith("https://")


def test_compose_services_start_in_order_and_scale() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
            else:
                assert spec["condition"] == "service_completed_successfully"
                assert services[dependency]["restart"] == "no"
    processor = services["processor"]
    assert "container_name" not in processor
    assert "ports" not in processor


def test_prometheus_and_grafana_are_wired_to_the_processor() -> None:
    services = _compose()["services"]
    (job,) = _load_one(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["processor"]
    assert discovery["port"] == METRICS_PORT
    assert services["processor"]["environment"]["STREAM_METRICS_PORT"] == str(METRICS_PORT)
    mounts = dict(v.removesuffix(":ro").split(":") for v in services["grafana"]["volumes"])
    assert all((ROOT / source).exists() for source in mounts)
    provisioning = GRAFANA / "provisioning"
    (provider,) = _load_one(provisioning / "dashboards" / "stream.yml")["providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    (source,) = _load_one(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert urlsplit(source["url"]).hostname in services


def test_dashboard_queries_only_metrics_the_package_exposes() -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "stream.json").read_text())
    datasources = _load_one(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = datasources["datasources"]
    exposed = _exposed_series()
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]
            names = _metric_names(target["expr"])
            assert names, target["expr"]
            assert names <= exposed, (panel["title"], names - exposed)
            queried |= names
    wanted = {
        "stream_sms_stored_total",
        "stream_records_consumed_total",
        "stream_consumer_lag",
        "stream_limiter_limit",
        "stream_limiter_in_flight",
        "stream_sms_retried_total",
        "stream_sms_dead_lettered_total",
        "stream_end_to_end_delay_seconds_bucket",
        "stream_api_latency_seconds_bucket",
        "stream_mongo_write_seconds_bucket",
        "stream_last_commit_timestamp_seconds",
        "stream_halted",
        "stream_processing_errors_total",
        "stream_limiter_paused",
    }
    assert wanted <= queried
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(set(titles)) == len(titles)
    assert not [title for title in titles if "upsert" in title], "the sink inserts"
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dashboard["panels"]]
    assert len(set(cells)) == len(cells), "panels overlap"


def test_alert_rules_query_only_metrics_the_package_exposes() -> None:
    exposed = _exposed_series()
    rules = [rule for group in _load_one(ALERTS)["groups"] for rule in group["rules"]]
    assert len({rule["alert"] for rule in rules}) == len(rules)
    queried: set[str] = set()
    for rule in rules:
        names = _metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exposed, (rule["alert"], names - exposed)
        queried |= names
        assert parse_duration("for", rule["for"]) > 0, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
    wanted = {
        "stream_consumer_lag",  # lag growing
        "stream_last_commit_timestamp_seconds",  # no commit for 10 minutes
        "stream_sms_dead_lettered_total",  # DLQ rate
        "stream_halted",
        "stream_limiter_paused",  # paused long
        "stream_ready",
    }
    assert wanted <= queried


def test_alert_rules_are_loaded_by_compose_and_kubernetes(built: list[Obj]) -> None:
    assert _one(built, "PrometheusRule")["spec"] == _load_one(ALERTS)
    prometheus = _compose()["services"]["prometheus"]
    mounts = {
        Path(target): ROOT / source
        for source, target in (v.removesuffix(":ro").split(":") for v in prometheus["volumes"])
    }
    config = PROMETHEUS / "prometheus.yml"
    (config_target,) = [target for target, source in mounts.items() if source == config]
    rule_files = _load_one(config)["rule_files"]
    assert [mounts.get(config_target.parent / entry) for entry in rule_files] == [ALERTS]


def test_dockerfile_targets_run_stream_as_non_root() -> None:
    stages = _dockerfile_stages()
    assert list(stages)[-1] == "runtime", "a plain `docker build .` gives the runtime image"
    for target in ("runtime", "devkit"):
        instructions = _effective_instructions(stages, target)
        user = instructions["USER"][-1].split(":")[0]
        assert user not in ("root", "0"), target
        assert json.loads(instructions["ENTRYPOINT"][-1]) == ["stream"], target
        assert json.loads(instructions["CMD"][-1]) == ["run"], target
        assert instructions["EXPOSE"] == [str(METRICS_PORT)], target
        assert "/healthz" in instructions["HEALTHCHECK"][-1], target
    assert all(_docker_ignored(path) for path in (".git", ".venv", ".stack", "tests", "deploy"))


def test_runtime_image_leaves_out_the_devkit_and_the_devkit_image_has_it() -> None:
    stages = _dockerfile_stages()
    builders = {}
    for target in ("runtime", "devkit"):
        (copy,) = _effective_instructions(stages, target)["COPY"]
        source, destination = copy.removeprefix("--from=").split()[0], copy.split()[-1]
        assert (copy.split()[1], destination) == ("/opt/venv", "/opt/venv"), copy
        builders[target] = _effective_instructions(stages, source)
    assert f"rm -r {DEVKIT_DIR}" in builders["runtime"]["RUN"]
    assert f"{DEVKIT_STAND_IN} {DEVKIT_DIR}/__init__.py" in builders["runtime"]["COPY"]
    devkit_steps = builders["devkit"]["RUN"] + builders["devkit"]["COPY"]
    assert not any("devkit" in step for step in devkit_steps)
    for stage in stages.values():
        for copy in stage.instructions.get("COPY", []):
            if not copy.startswith("--from="):
                for source in copy.split()[:-1]:
                    assert (ROOT / source).exists(), source
                    assert not _docker_ignored(source), source


@pytest.mark.parametrize("command", sorted(DEVKIT_COMMANDS))
def test_devkit_command_in_the_runtime_image_fails_with_one_line(
    runtime_tree: Path, command: str
) -> None:
    done = _run_in(runtime_tree, "-m", "stream", command, "--help")
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"stream {command}: not in this image"), line
    assert "`devkit` target" in line


def test_runtime_image_imports_every_runtime_module(runtime_tree: Path) -> None:
    modules = sorted(
        ".".join(path.relative_to(runtime_tree).with_suffix("").parts).removesuffix(".__init__")
        for path in (runtime_tree / "stream").rglob("*.py")
        if not path.is_relative_to(runtime_tree / DEVKIT_DIR) and path.stem != "__main__"
    )
    assert len(modules) > 20
    script = f"import importlib, stream\nfor m in {modules!r}: importlib.import_module(m)\n"
    done = _run_in(runtime_tree, "-c", script + "print(stream.__file__)")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(runtime_tree)
    assert _run_in(runtime_tree, "-m", "stream", "--help").returncode == 0


def test_compose_builds_the_devkit_target_only_for_devkit_commands() -> None:
    services = _compose()["services"]
    built = {name: service for name, service in services.items() if "build" in service}
    assert {"processor", "upstream"} <= set(built)
    images: dict[str, str] = {}
    for name, service in built.items():
        command = service.get("command", ["run"])
        wanted = "devkit" if command[0] in DEVKIT_COMMANDS else "runtime"
        assert service["build"] == {"context": ".", "target": wanted}, name
        assert images.setdefault(wanted, service["image"]) == service["image"], name
    assert len(set(images.values())) == len(images), "one tag per target"


def test_kubernetes_runs_no_devkit_command(built: list[Obj]) -> None:
    image = _container(built, "StatefulSet")["image"]
    for obj in built:
        pod = _pod_spec(obj)
        for container in pod["containers"] if pod else []:
            if container["image"] == image:
                assert "command" not in container, "the image's ENTRYPOINT is `stream`"
                command = container.get("args", ["run"])[0]
                assert command not in DEVKIT_COMMANDS, (obj["kind"], command)
