"""kafkajs (Node.js) against ``robustmq-server``: ``tests/js/kafkajs/smoke.js`` creates two
topics, produces 100 keyed messages with headers, reads them back in a consumer group,
lists and deletes a topic, and prints JSON that this test checks; then the same with
SASL PLAIN and SCRAM-SHA-256 against a password file, and with a wrong password. kafkajs
is pinned in ``tests/js/kafkajs/package.json`` and installed by ``ci/install.sh``
(``npm ci``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import defaultdict

import pytest

from robustmq.broker.auth.users import set_password
from tests.conftest import free_port
from tests.integration.test_kafka_server import _start, _stop

HERE = os.path.dirname(os.path.abspath(__file__))
SMOKE_DIR = os.path.join(HERE, "..", "js", "kafkajs")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the kafkajs smoke test needs Node.js")
    assert os.path.isdir(os.path.join(SMOKE_DIR, "node_modules", "kafkajs")), (
        "kafkajs is not installed: run `npm ci` in tests/js/kafkajs (ci/install.sh does)"
    )
    return node


def _smoke(port: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_node(), "smoke.js", f"127.0.0.1:{port}"],
        cwd=SMOKE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, **env),
    )


def test_kafkajs_produces_consumes_in_a_group_and_administers_topics(tmp_path):
    _node()
    port = free_port()
    proc, _ = _start(str(tmp_path / "data"), port, "--storage", "memory")
    try:
        run = _smoke(port)
    finally:
        assert _stop(proc) == 0
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)

    assert result["created"] is True
    assert result["listed"] == ["js-admin", "js-data"]
    assert result["after_delete"] == ["js-data"]
    assert result["produce_errors"] == 0

    consumed = result["consumed"]
    assert sorted(int(m["value"].removeprefix("value-")) for m in consumed) == list(range(100))
    partitions_of_key = defaultdict(set)
    offsets = defaultdict(list)
    for m in consumed:
        assert m["value"] == f"value-{m['n']}" and m["key"] == f"key-{int(m['n']) % 10}"
        partitions_of_key[m["key"]].add(m["partition"])
        offsets[m["partition"]].append(m["offset"])
    # Keyed partitioning: every key lands in one partition; each partition in order.
    assert all(len(p) == 1 for p in partitions_of_key.values())
    assert all(o == list(range(len(o))) for o in offsets.values())
    # Ten keys spread over all three partitions (murmur2, as the Java client); the group
    # committed the end of each.
    assert sorted(offsets) == [0, 1, 2]
    assert {c["partition"]: c["offset"] for c in result["committed"]} == {
        p: len(o) for p, o in offsets.items()
    }


@pytest.mark.parametrize("mechanism", ["plain", "scram-sha-256"])
def test_kafkajs_authenticates_with_sasl(tmp_path, mechanism):
    _node()
    passwords = tmp_path / "passwd"
    set_password(str(passwords), "js", "j5-pass")
    config = tmp_path / "robustmq.toml"
    config.write_text(
        f'[kafka]\nsasl_mechanisms = ["PLAIN", "SCRAM-SHA-256"]\n'
        f'[auth]\npassword_file = "{passwords}"\n'
    )
    port = free_port()
    proc, _ = _start(str(tmp_path / "data"), port, "--storage", "memory", "--config", str(config))
    sasl = {"KAFKA_SASL_MECHANISM": mechanism, "KAFKA_SASL_USERNAME": "js"}
    try:
        good = _smoke(port, KAFKA_SASL_PASSWORD="j5-pass", **sasl)
        bad = _smoke(port, KAFKA_SASL_PASSWORD="wrong", **sasl)
    finally:
        assert _stop(proc) == 0
    assert good.returncode == 0, good.stderr
    assert len(json.loads(good.stdout)["consumed"]) == 100
    assert bad.returncode == 1
    assert "invalid username or password" in bad.stderr, bad.stderr
