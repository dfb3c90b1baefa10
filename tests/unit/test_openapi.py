"""The OpenAPI document against the routes the server really registers, the generated parts
of docs/operations.md, and the small pure helpers of the API, the metrics and the CLI
(latency histograms, ACL rule lines and file edits, hot-reloadable config keys)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from importlib import resources

import pytest
from aiohttp.test_utils import make_mocked_request

from robustmq.broker.auth.acl import edit_acl_file, format_rule, parse_rule
from robustmq.cli import ctl, ctl_docs
from robustmq.config import AuthConfig, Config, HttpConfig, check_key
from robustmq.errors import ApiBadRequest, ConfigError, SecurityFileError
from robustmq.http import openapi
from robustmq.http.api.cluster import MASK, masked
from robustmq.http.api.cluster_config import hot_keys
from robustmq.http.api.common import paged
from robustmq.http.routes import ROUTES
from robustmq.http.server import build_app
from robustmq.observability import metrics
from robustmq.observability.latency import LatencyHistogram

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Node:
    """What build_app needs of a node: nothing is started."""

    config = Config()
    mqtt = None
    kafka = None
    storage = None
    listeners: list[tuple[str, str, int]] = []
    ready = True


def test_document_is_valid_openapi():
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(openapi.document(ROUTES))


def test_every_registered_route_is_documented_and_nothing_else():
    app = build_app(_Node(), HttpConfig())  # type: ignore[arg-type]
    registered = {
        (r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None
    }
    doc = openapi.document(ROUTES)
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    assert registered == documented
    assert len(documented) == len(ROUTES)  # no route registered twice


def test_every_operation_documents_its_errors_and_token():
    doc = openapi.document(ROUTES)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            assert any(s.startswith("2") for s in responses), (method, path)
            if path in ("/health", "/ready"):
                assert op["security"] == [] and "401" not in responses
            else:
                assert "401" in responses, (method, path)
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    assert "{" + p["name"] + "}" in path and p["required"]


def test_operation_ids_are_unique():
    doc = openapi.document(ROUTES)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_docs_operations_page_is_current():
    with open(os.path.join(ROOT, "docs", "operations.md")) as fh:
        page = fh.read()
    generated = {
        "python -m robustmq.observability.metrics": metrics.markdown(),
        "python -m robustmq.http.openapi --markdown": openapi.markdown(openapi.document(ROUTES)),
        "python -m robustmq.cli.ctl_docs": ctl_docs.markdown(),
    }
    for command, text in generated.items():
        assert text in page, f"docs/operations.md is stale: paste the output of {command}"


def test_dashboards_only_use_documented_metrics():
    known = set(metrics.METRICS) | set(metrics.PROCESS_METRICS)
    folder = resources.files("robustmq.observability") / "dashboards"
    names = [f.name for f in folder.iterdir() if f.name.endswith(".json")]
    assert "storage.json" in names
    for name in names:
        for panel in json.loads((folder / name).read_text())["panels"]:
            for target in panel["targets"]:
                for metric in re.findall(r"robustmq_\w+", target["expr"]):
                    base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
                    assert base in known, (name, metric)


def test_every_exported_counter_is_documented():
    for name in (*metrics._MQTT_COUNTERS.values(), *metrics._KAFKA_COUNTERS.values()):
        assert metrics.METRICS[name].kind == "counter"
    assert not any("client" in label for m in metrics.METRICS.values() for label in m.labels)


def test_paging_cuts_and_counts():
    items = [{"i": i} for i in range(7)]
    page = paged(make_mocked_request("GET", "/x?page=2&limit=3"), items)
    assert page == {
        "data": [{"i": 3}, {"i": 4}, {"i": 5}],
        "meta": {"page": 2, "limit": 3, "count": 7},
    }
    assert paged(make_mocked_request("GET", "/x?page=9"), items)["data"] == []
    for query, field in (
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("page=0", "page"),
        ("page=x", "page"),
    ):
        with pytest.raises(ApiBadRequest) as exc:
            paged(make_mocked_request("GET", f"/x?{query}"), items)
        assert exc.value.field == field and exc.value.status == 400


def test_config_secrets_are_masked():
    config = dataclasses.replace(
        Config(),
        http=HttpConfig(admin_token="s3cr3t-tok"),
        auth=AuthConfig(jwt_secret="jwt-s3cr3t", password_file="/etc/passwd-file"),
    )
    shown = masked(config)
    assert shown["http"]["admin_token"] == MASK
    assert shown["auth"]["jwt_secret"] == MASK
    assert shown["auth"]["password_file"] == "/etc/passwd-file"
    assert masked(Config())["http"]["admin_token"] == ""  # nothing to hide: shown empty
    assert "s3cr3t-tok" not in json.dumps(shown) and "jwt-s3cr3t" not in json.dumps(shown)


def test_ctl_renders_pages_lists_and_objects():
    page = {
        "data": [{"a": 1, "b": None}, {"a": 22, "c": [1]}],
        "meta": {"page": 1, "limit": 2, "count": 5},
    }
    lines = ctl.render_table(page).splitlines()
    assert lines[0].split() == ["A", "B", "C"]
    assert lines[2].split() == ["22", "[1]"]
    assert lines[-1] == "-- page 1, 2 shown of 5 (limit 2)"
    assert ctl.render_table([]) == "(none)"
    assert ctl.render_table({"key": "v", "longer": 2}) == "key     v\nlonger  2"


def test_latency_histogram_buckets_are_cumulative_with_an_inf_bucket():
    histogram = LatencyHistogram(2, 64)
    for ns in (5_000, 10_000, 20_000, 3_000_000_000):
        histogram.record(1, ns)
    buckets, total = histogram.cumulative(1)
    as_dict = dict(buckets)
    assert as_dict["1e-05"] == 2  # 5 µs and exactly 10 µs: "le" includes the bound
    assert as_dict["2.5e-05"] == 3
    assert as_dict["2.5"] == 3 and as_dict["+Inf"] == 4
    assert buckets[-1][0] == "+Inf" and [c for _, c in buckets] == sorted(c for _, c in buckets)
    assert total == pytest.approx(3.000035)
    assert histogram.sampled(1) and not histogram.sampled(0)
    with pytest.raises(ValueError):
        LatencyHistogram(1, 0)


@pytest.mark.parametrize(
    "line",
    [
        "allow all all #",
        "deny user:bob publish a/+/c",
        "allow clientid:c1 subscribe x/%c/# qos<=1",
        "allow ip:10.0.0.0/8 publish t retain=false",
        "allow all all ${jwt.tenant}/# qos<=0 retain=true",
    ],
)
def test_acl_rule_lines_round_trip(line):
    assert format_rule(parse_rule(line)) == line


def test_edit_acl_file_keeps_comments_and_refuses_what_does_not_exist(tmp_path):
    path = tmp_path / "acl"
    path.write_text("# head\nallow all publish a\n\n# middle\ndeny all all #\n")
    rules = edit_acl_file(str(path), insert="deny user:x all a", before=1)
    assert [format_rule(r) for r in rules] == [
        "allow all publish a",
        "deny user:x all a",
        "deny all all #",
    ]
    assert path.read_text() == (
        "# head\nallow all publish a\n\n# middle\ndeny user:x all a\ndeny all all #\n"
    )
    edit_acl_file(str(path), remove=0)
    edit_acl_file(str(path), insert="allow all all b")  # at the end
    assert path.read_text() == "# head\n\n# middle\ndeny user:x all a\ndeny all all #\n" + (
        "allow all all b\n"
    )
    with pytest.raises(IndexError):
        edit_acl_file(str(path), remove=3)
    path.write_text("allow nobody all #\n")
    with pytest.raises(SecurityFileError):
        edit_acl_file(str(path), insert="allow all all a")
    assert path.read_text() == "allow nobody all #\n"


def test_config_keys_are_checked_as_in_a_file_and_flagged_hot_or_not():
    assert check_key("kafka.default_partitions", "3") == (
        "kafka",
        "default_partitions",
        3,
        "topics created after the change",
    )
    assert check_key("mqtt.port", 1884)[3] == ""
    for key, value in (("log.level", "loud"), ("mqtt.nope", 1), ("x.y", 1), ("mqtt.port", -1)):
        with pytest.raises(ConfigError):
            check_key(key, value)
    assert set(hot_keys()) >= {"log.level", "mqtt.retain_available", "kafka.auto_create_topics"}
    assert "mqtt.receive_maximum" not in hot_keys()
