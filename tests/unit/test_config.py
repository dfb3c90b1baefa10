"""The config tree: precedence, validation messages, and docs that list every key."""

from __future__ import annotations

import dataclasses
import os

import pytest

from robustmq.config import ConfigError, load_config, markdown_table

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_defaults_match_the_documented_surface():
    c = load_config(environ={})
    assert (c.mqtt.port, c.mqtt.tls_port, c.mqtt.ws_port, c.mqtt.wss_port) == (
        1883,
        8883,
        8083,
        8084,
    )
    assert c.mqtt.ws_path == "/mqtt"
    assert c.node.roles == ["meta", "broker", "engine"]
    assert c.node.data_dir == "./data"


def test_file_then_env_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[mqtt]\nport = 1001\nmax_packet_size = 5000\n[node]\nid = 4\n")
    c = load_config(
        path,
        environ={"ROBUSTMQ_MQTT_PORT": "1002", "ROBUSTMQ_NODE_ID": "5"},
        overrides={"mqtt.port": 1003},
    )
    assert (c.mqtt.port, c.mqtt.max_packet_size, c.node.id) == (1003, 5000, 5)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"ROBUSTMQ_MQTT_PORT": "x"}, "mqtt.port"),
        ({"ROBUSTMQ_MQTT_PORT": "-1"}, "mqtt.port"),
        ({"ROBUSTMQ_MQTT_RECEIVE_MAXIMUM": "0"}, "mqtt.receive_maximum"),
        ({"ROBUSTMQ_NODE_ROLES": "broker,chef"}, "node.roles"),
        ({"ROBUSTMQ_MQTT_VERIFY_CLIENT": "sometimes"}, "mqtt.verify_client"),
        ({"ROBUSTMQ_MQTT_CONNECT_TIMEOUT": "fast"}, "mqtt.connect_timeout"),
    ],
)
def test_bad_values_name_the_key(env, key):
    with pytest.raises(ConfigError) as err:
        load_config(environ=env)
    assert err.value.key == key
    assert key in str(err.value) and "allowed" in str(err.value)


def test_toml_types_are_checked(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nport = "1883"\n')
    with pytest.raises(ConfigError, match="mqtt.port"):
        load_config(path, environ={})


def test_config_is_frozen():
    c = load_config(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.mqtt.port = 1  # type: ignore[misc]


def test_docs_list_every_key():
    with open(os.path.join(ROOT, "docs", "configuration.md")) as fh:
        doc = fh.read()
    assert markdown_table() in doc, (
        "docs/configuration.md is stale: paste python -m robustmq.config"
    )
