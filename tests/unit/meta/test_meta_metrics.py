"""The Meta Service's counters on ``/metrics``: a one-node meta server on a free port, real
gRPC requests through ``MetaClient``, then the Prometheus exposition the HTTP listener
would serve, parsed back with prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families

from robustmq.meta.client import MetaClient
from robustmq.meta.groups import encode_command
from robustmq.meta.service import start_meta_node
from robustmq.node import Node
from robustmq.observability.metrics import exposition, registry_for
from tests.conftest import free_port


def _samples(node: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(registry_for(cast(Node, node))).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_proposals_commit_time_leadership_and_grpc_requests_are_exported(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = await start_meta_node(1, (), "127.0.0.1", port, str(tmp_path))
    client = MetaClient([f"127.0.0.1:{port}"])
    node = SimpleNamespace(mqtt=None, kafka=None, bridges=None, storage=None, meta=server)
    try:
        for k in range(7):
            await client.propose(
                "mqtt",
                encode_command("user.set", username=f"u{k}", password_hash="h", superuser=False),
            )
        await client.read("mqtt", "users")
        await client.status(f"127.0.0.1:{port}")
        m = _samples(node)
    finally:
        await client.close()
        await server.stop()
    mqtt = (("group", "mqtt"),)
    assert m[("robustmq_meta_proposals_total", mqtt)] == 7
    assert m[("robustmq_meta_proposals_total", (("group", "offsets"),))] == 0
    assert m[("robustmq_meta_commit_seconds_count", mqtt)] == 7
    assert m[("robustmq_meta_commit_seconds_bucket", (*mqtt, ("le", "+Inf")))] == 7
    assert 0 < m[("robustmq_meta_commit_seconds_sum", mqtt)] < 7 * 5
    assert m[("robustmq_meta_leader", mqtt)] == 1
    assert m[("robustmq_meta_leader_changes_total", mqtt)] == 1
    assert m[("robustmq_meta_term", mqtt)] >= 2
    assert m[("robustmq_meta_voters", mqtt)] == 1
    # The bootstrap entry, the leader's no-op and seven commands.
    assert m[("robustmq_meta_commit_index", mqtt)] == 9
    assert m[("robustmq_meta_applied_index", mqtt)] == 9
    method = (("method", "Propose"),)
    assert m[("robustmq_meta_grpc_requests_total", method)] == 7
    assert m[("robustmq_meta_grpc_seconds_count", method)] == 7
    assert m[("robustmq_meta_grpc_requests_total", (("method", "Read"),))] == 1
    assert m[("robustmq_meta_grpc_requests_total", (("method", "Status"),))] == 1
    assert m[("robustmq_meta_grpc_requests_total", (("method", "Watch"),))] == 0
    # A method never called has no latency series (no empty histograms).
    assert ("robustmq_meta_grpc_seconds_count", (("method", "AddNode"),)) not in m
