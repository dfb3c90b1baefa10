"""The Grafana dashboards against real data: a real Prometheus (the Debian package) scrapes a
real robustmq-server that MQTT and Kafka clients are using, and every query of every panel
must return data through Prometheus' HTTP API, so a renamed metric cannot leave a panel
blank. Skipped, saying how to install it, when ``prometheus`` is not on PATH.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from importlib import resources
from typing import Any

import pytest

from robustmq.meta.client import MetaClient
from robustmq.meta.groups import encode_command
from tests.conftest import free_port
from tests.integration.clients import Paho, props
from tests.integration.test_cli import _stop
from tests.integration.test_http_api import start_server

_FOLDER = resources.files("robustmq.observability") / "dashboards"
# Every dashboard shipped, whoever adds one.
DASHBOARDS = tuple(sorted(f.name[:-5] for f in _FOLDER.iterdir() if f.name.endswith(".json")))
RATE_INTERVAL = "30s"  # what $__rate_interval becomes: many 1 s scrapes


def _dashboard(name: str) -> dict[str, Any]:
    return json.loads((_FOLDER / f"{name}.json").read_text())


def test_the_dashboards_of_every_area_are_there():
    assert {"overview", "mqtt", "kafka", "storage"} <= set(DASHBOARDS)


def _queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) for every target of every panel."""
    found = []
    for name in DASHBOARDS:
        for panel in _dashboard(name)["panels"]:
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                found.append((name, panel["title"], expr))
    return found


def test_dashboards_use_a_datasource_variable():
    for name in DASHBOARDS:
        dashboard = _dashboard(name)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"


def _query(port: int, expr: str) -> list[Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


async def _meta_requests(address: str) -> None:
    """Meta Service gRPC traffic for the meta dashboard's request panels."""
    client = MetaClient([address])
    try:
        await client.propose("cluster", encode_command("config.set", key="dash", value="1"))
        await client.read("cluster", "config/dash")
        await client.status(address)
    finally:
        await client.close()


def _wait_ready(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("prometheus did not become ready")


def test_every_panel_query_returns_data(tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed: run `apt-get install -y prometheus`")
    kafka = pytest.importorskip("kafka")
    grpc_port = free_port()  # the meta dashboard's gRPC panels need a Meta Service listener
    server = start_server(tmp_path, token="dash-token", ROBUSTMQ_CLUSTER_GRPC_PORT=str(grpc_port))
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: robustmq\n"
        "    authorization:\n      credentials: dash-token\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.http}']\n"
    )
    prom = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    consumer = None
    try:
        _wait_ready(prom_port, prom)
        clients = [Paho(server.mqtt, f"dash-{v}", v) for v in (3, 4, 5)]
        clients[2].subscribe("dash/#", qos=1)
        offline = Paho(
            server.mqtt,
            "dash-off",
            5,
            clean=False,
            connect_props=props("CONNECT", SessionExpiryInterval=600),
        )
        offline.subscribe("dash/#", qos=1)
        offline.client.disconnect()
        # More than 64 PUBLISHes: the handler-time histogram times one in 64 per type.
        for i in range(150):
            clients[0].publish("dash/x", b"%d" % i, qos=1, retain=i == 0)
        bootstrap = f"127.0.0.1:{server.kafka}"
        producer = kafka.KafkaProducer(bootstrap_servers=bootstrap)
        for _ in range(20):
            producer.send("dash-t", b"v")
        producer.flush(10)
        producer.close()
        consumer = kafka.KafkaConsumer(
            "dash-t", bootstrap_servers=bootstrap, group_id="dash-g", auto_offset_reset="earliest"
        )
        consumer.poll(timeout_ms=2000)
        asyncio.run(_meta_requests(f"127.0.0.1:{grpc_port}"))

        queries = _queries()
        blank = queries
        deadline = time.monotonic() + 90
        while blank and time.monotonic() < deadline:
            time.sleep(1)
            blank = [q for q in blank if not _query(prom_port, q[2])]
        assert not blank, f"panels without data: {blank}"
        offline_now = _query(prom_port, "robustmq_mqtt_sessions_offline")
        assert float(offline_now[0]["value"][1]) >= 1
        # The labelled series show what the traffic above did, not just zeros.
        for expr, least in (
            ("robustmq_mqtt_sessions_persistent", 1),
            ('robustmq_mqtt_messages_received_by_qos_total{qos="1"}', 150),
            ('robustmq_mqtt_packets_received_total{packet_type="PUBLISH"}', 150),
            ('robustmq_mqtt_connections_by_listener{listener="tcp"}', 3),
            ("robustmq_kafka_group_rebalances_total", 1),
        ):
            assert float(_query(prom_port, expr)[0]["value"][1]) >= least, expr
    finally:
        if consumer is not None:
            consumer.close()
        prom.terminate()
        prom.wait(timeout=15)
        _stop(server.proc)
