"""Static checks of everything under deploy/ and of docker-compose.yml (no Docker engine here).

Prometheus files with promtool, compose with docker-compose, Kubernetes manifests against
the Kubernetes JSON schemas in strict mode (kubernetes-validate, offline), the Dockerfile
with hadolint, the Grafana dashboard structurally. Beyond syntax, each check ties the files
to the code: same ports, flags, metric names, collection shape and payload indexes.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from imgsearch.model import ImageEncoder
from imgsearch.settings import BUNDLED_MODEL, DEFAULT_COLLECTION, GROUP_OF_FIELD
from tests.metrics_doc import documented_metrics

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "imgsearch.json"
BIN = Path(sys.executable).parent
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]  # oldest supported here, newest bundled schemas


def tool(name: str) -> str:
    """A tool from the venv (pip test extra) or the system (scripts/install_test_tools.sh)."""
    found = shutil.which(name, path=f"{BIN}:/usr/local/bin:/usr/bin:/bin")
    if found is None:
        pytest.fail(f"{name} is missing: run `make install-test` (scripts/install_test_tools.sh)")
    return found


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [tool(args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{shlex.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def metric_names(expr: str) -> set[str]:
    """imgsearch metric names in PromQL, without the _bucket/_count/_sum series suffixes."""
    return {re.sub(r"_(bucket|count|sum)$", "", m) for m in re.findall(r"imgsearch_[a-z_]+", expr)}


def documented_names() -> set[str]:
    return set(documented_metrics())


# ---- Prometheus ------------------------------------------------------------------------


def test_prometheus_config_and_alert_rules() -> None:
    run("promtool", "check", "config", str(PROMETHEUS / "prometheus.yml"))
    run("promtool", "check", "rules", str(PROMETHEUS / "alerts.yml"))
    run("promtool", "test", "rules", str(PROMETHEUS / "rules_test.yml"))

    # Every alert has a unit test in which it fires, and reads only documented metrics.
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert {r["alert"] for r in rules} == fired
    for rule in rules:
        assert metric_names(rule["expr"]) <= documented_names(), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    alerts_doc = (ROOT / "docs" / "operations.md").read_text()
    for rule in rules:
        assert f"`{rule['alert']}`" in alerts_doc, f"{rule['alert']} is not explained in the docs"


def test_prometheus_kubernetes_config(tmp_path: Path) -> None:
    """The k8s scrape config; Debian's promtool lacks Kubernetes discovery, then the jobs are
    checked with static targets in its place (relabelling and everything else unchanged)."""
    source = PROMETHEUS / "prometheus-kubernetes.yml"
    config = yaml.safe_load(source.read_text())
    probe = subprocess.run(
        [tool("promtool"), "check", "config", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        assert "kubernetes_sd_configs not found" in probe.stdout + probe.stderr, probe.stdout
        for job in config["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs")[0]["role"] == "pod"
            job["static_configs"] = [{"targets": ["pod:9464"]}]
        copy = tmp_path / "prometheus-kubernetes.yml"
        copy.write_text(yaml.safe_dump(config))
        shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
        run("promtool", "check", "config", str(copy))
    # The pods it keeps are the ones the manifests annotate and label.
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    kept = {
        job: next(r["regex"] for r in jobs[job]["relabel_configs"] if r.get("action") == "keep")
        for job in ("imgsearch", "qdrant")
    }
    templates = [
        d["spec"]["template"]
        for path in K8S.glob("*.yaml")
        for d in load_all(path)
        if d["kind"] in ("Deployment", "StatefulSet")
    ]
    assert templates
    for template in templates:
        labels, notes = template["metadata"]["labels"], template["metadata"]["annotations"]
        assert labels["app.kubernetes.io/name"] in kept.values()
        assert "app.kubernetes.io/component" in labels
        assert notes["prometheus.io/scrape"] == "true"
        ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
        assert int(notes["prometheus.io/port"]) in ports


# ---- Grafana -----------------------------------------------------------------------------


def test_grafana_dashboard_and_provisioning() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uid = datasources[0]["uid"]
    assert datasources[0]["type"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    used: set[str] = set()
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        name = panel["title"]
        assert panel["type"] in {"stat", "timeseries", "table"}, name
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, name
        assert panel["targets"], name
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), name
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, name
            assert target["expr"].strip(), name
            assert target["expr"].count("(") == target["expr"].count(")"), name
            used |= metric_names(target["expr"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, name
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{name} overlaps another panel"
                cells.add((x, y))
    # Every documented metric is on the dashboard, and the dashboard uses no other.
    assert used == documented_names()

    providers = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/imgsearch.yml").read_text()
    )["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = [v.split(":") for v in compose["services"]["grafana"]["volumes"]]
    mounts = {target: source for source, target, *_ in volumes}
    assert mounts[providers[0]["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"


# ---- docker-compose ------------------------------------------------------------------------


def test_compose_file() -> None:
    run("docker-compose", "-f", "docker-compose.yml", "config", "-q")
    compose = yaml.safe_load(run("docker-compose", "-f", "docker-compose.yml", "config").stdout)
    services = compose["services"]
    assert set(services) == {"qdrant", "embedder", "searcher", "prometheus", "grafana"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
        for volume in service.get("volumes", []):  # named volumes persist the state
            source = volume.split(":")[0]
            assert source.startswith("/") or source in compose["volumes"], (name, volume)
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:v")

    def waits_for(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    assert waits_for("embedder") == {"qdrant": "service_healthy"}
    assert waits_for("searcher") == {"qdrant": "service_healthy", "embedder": "service_healthy"}
    assert waits_for("grafana") == {"prometheus": "service_healthy"}
    for name in ("embedder", "searcher"):
        service = services[name]
        command = service["command"]
        assert command[0] == name
        flags = dict(itertools.pairwise(command))
        assert flags["--qdrant-url"] == "http://qdrant:6334"
        assert flags["--listen"] == "0.0.0.0:50051"
        assert flags["--metrics-listen"] == "0.0.0.0:9464"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["healthcheck"]["test"][1:] == ["python", "-m", "imgsearch.rpc.healthcheck"]
        photos = [v for v in service["volumes"] if ":/photos" in v]
        assert photos and photos[0].endswith(":/photos:ro"), "the photos are mounted read-only"
        assert service["read_only"] is True
    assert services["embedder"]["command"][1] == "/photos"
    # The flags are real ones of the CLI.
    for name in ("embedder", "searcher"):
        help_text = subprocess.run(
            [sys.executable, "-m", "imgsearch.cli", name, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for flag in services[name]["command"][1:]:
            if flag.startswith("--"):
                assert flag in help_text, (name, flag)
    # Prometheus scrapes the services by their compose names on the metrics port.
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    dns = scrape[0]["dns_sd_configs"][0]
    assert set(dns["names"]) == {"embedder", "searcher"} and dns["port"] == 9464
    assert "./deploy/prometheus:/etc/prometheus:ro" in [
        v.replace(str(ROOT), ".") for v in services["prometheus"]["volumes"]
    ]


# ---- Kubernetes --------------------------------------------------------------------------


def _manifests() -> dict[str, dict[str, Any]]:
    """kind/name -> resource, from every manifest listed in the kustomization."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    on_disk = [p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"]
    assert sorted(listed) == sorted(on_disk), "kustomization.yaml lists every manifest"
    resources = [d for name in listed for d in load_all(K8S / name)]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in resources}


def test_kubernetes_manifests_validate_strictly() -> None:
    files = sorted(str(p) for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    for version in KUBERNETES_VERSIONS:
        result = run("kubernetes-validate", "--strict", "--quiet", "-k", version, *files)
        assert "ERROR" not in result.stdout + result.stderr
    for script in _scripts(_manifests()):
        check = subprocess.run(
            ["sh", "-n"], input=script, capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, f"{check.stderr}\n{script}"


def _scripts(manifests: dict[str, dict[str, Any]]) -> list[str]:
    found = []
    for resource in manifests.values():
        if resource["kind"] == "ConfigMap":
            found += [v for k, v in resource["data"].items() if k.endswith(".sh")]
        spec = resource.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            command = container.get("command", [])
            if command[:1] in (["/bin/sh"], ["/bin/bash"]) and len(command) == 3:
                found.append(command[2])
    assert len(found) >= 4
    return found


def test_kubernetes_topology(encoder: ImageEncoder) -> None:
    manifests = _manifests()
    assert {r["metadata"].get("namespace") for r in manifests.values()} <= {"imgsearch", None}

    # Qdrant: 3 peers in cluster mode, bootstrapped by qdrant-0, found through a headless
    # service that publishes them before they are ready, with persistent volumes.
    qdrant = manifests["StatefulSet/qdrant"]
    assert qdrant["spec"]["replicas"] == 3
    assert qdrant["spec"]["serviceName"] == "qdrant-headless"
    container = qdrant["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QDRANT__CLUSTER__ENABLED"] == "true"
    start = manifests["ConfigMap/qdrant-start"]["data"]["start.sh"]
    assert "--bootstrap" in start and "qdrant-0" in start
    headless = manifests["Service/qdrant-headless"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["ports"]} == {6333, 6334, 6335}
    claims = {c["metadata"]["name"] for c in qdrant["spec"]["volumeClaimTemplates"]}
    assert {m["name"] for m in container["volumeMounts"]} >= claims == {"storage", "snapshots"}

    # The collection job creates what imgsearch expects, sharded and replicated.
    job = manifests["Job/qdrant-create-collection"]["spec"]["template"]["spec"]["containers"][0]
    job_env = {e["name"]: e.get("value") for e in job["env"]}
    assert job_env["COLLECTION"] == DEFAULT_COLLECTION  # a server's unnamed collection
    # The published image serves efficientnet-lite0 (the only model it may carry): its size.
    assert int(job_env["DIMENSIONS"]) == encoder.dimensions
    assert (job_env["SHARDS"], job_env["REPLICATION"], job_env["PEERS"]) == ("6", "2", "3")
    script = job["command"][2]
    assert '\\"global\\"' in script and "Cosine" in script
    indexed = set(re.findall(r"(\w+):(?:keyword|integer)", script))
    store_source = (ROOT / "imgsearch" / "store" / "qdrant.py").read_text()  # the server store
    filtered = set(re.findall(r'FieldCondition\(key="(\w+)"', store_source))
    assert filtered <= indexed, "every payload field the store filters by needs an index"

    # imgsearch: a single-writer embedder, a scalable searcher, both probed over gRPC health.
    embedder, searcher = manifests["Deployment/embedder"], manifests["Deployment/searcher"]
    assert embedder["spec"]["replicas"] == 1
    assert embedder["spec"]["strategy"]["type"] == "Recreate"
    assert "HorizontalPodAutoscaler/searcher" in manifests
    assert manifests["HorizontalPodAutoscaler/searcher"]["spec"]["scaleTargetRef"]["name"] == (
        "searcher"
    )
    config = manifests["ConfigMap/imgsearch"]["data"]
    fields = {f"IMGSEARCH_{name.upper()}" for name in GROUP_OF_FIELD}
    assert set(config) <= fields, "the ConfigMap sets only real settings"
    port = int(config["IMGSEARCH_LISTEN"].rpartition(":")[2])
    for deployment, service in ((embedder, "Embedder"), (searcher, "Searcher")):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert [c["name"] for c in pod["initContainers"]] == ["wait-for-collection"]
        main = pod["containers"][0]
        assert main["args"][0] == deployment["metadata"]["name"]
        assert main["readinessProbe"]["grpc"] == {
            "port": port,
            "service": f"imgsearch.v1.{service}",
        }
        assert main["livenessProbe"]["tcpSocket"]["port"] == "grpc"  # not health: see yaml
        assert {"name": "grpc", "containerPort": port} in main["ports"]
        assert main["startupProbe"]["grpc"]["port"] == port
        assert set(main["resources"]) == {"requests", "limits"}
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        photos = next(m for m in main["volumeMounts"] if m["mountPath"] == "/photos")
        assert photos["readOnly"] is True


# ---- container image -----------------------------------------------------------------------


def test_dockerfile() -> None:
    run("hadolint", "--failure-threshold", "info", str(DEPLOY / "Dockerfile"))
    parsed = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    stages = [i["value"] for i in parsed.structure if i["instruction"] == "FROM"]
    assert stages == ["python:3.11-slim AS build", "python:3.11-slim"], "multi-stage, slim"
    final = parsed.structure[
        max(i for i, s in enumerate(parsed.structure) if s["instruction"] == "FROM") :
    ]
    user = [s["value"] for s in final if s["instruction"] == "USER"]
    assert user and user[-1] not in ("root", "0")
    health = [s["value"] for s in final if s["instruction"] == "HEALTHCHECK"]
    assert health and 'CMD ["python", "-m", "imgsearch.rpc.healthcheck"]' in health[0]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"imgsearch=={version}" in parsed.content, "the pinned version is the project's"
    env = parsed.envs
    assert env["IMGSEARCH_LISTEN"] == "0.0.0.0:50051"
    assert env["IMGSEARCH_METRICS_LISTEN"] == "0.0.0.0:9464"


def test_image_context_builds_a_wheel_with_the_model(tmp_path: Path) -> None:
    """What .dockerignore lets into the build context is enough to build the wheel, and the
    wheel carries the model (package data), so the image needs no download at run time."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded, then the sources allowed back in"
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    context = tmp_path / "context"
    for name in allowed:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy(source, context / name)
    copied = {
        s["value"].split()[0]
        for s in DockerfileParser(path=str(DEPLOY / "Dockerfile")).structure
        if s["instruction"] == "COPY" and "--from" not in s["value"]
    }
    assert copied <= set(allowed)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"),
            *("-w", str(tmp_path / "wheels"), str(context)),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("imgsearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    model = BUNDLED_MODEL.relative_to(ROOT)
    assert str(model) in names
    assert {
        "imgsearch/rpc/healthcheck.py",
        "imgsearch/store/backup.py",
        "imgsearch/embedder/indexer.py",
        "imgsearch/searcher/verdict.py",
        "imgsearch/py.typed",
    } <= names
    # One installed package: nothing beside imgsearch/ (and its metadata) in the wheel.
    assert {n.split("/")[0] for n in names} == {
        "imgsearch",
        wheel.name.split("-")[0] + "-0.1.0.dist-info",
    }
