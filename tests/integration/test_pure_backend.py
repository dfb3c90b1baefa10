"""The broker on the pure-Python twins: the protocol and session suites run again in a
child pytest with ROBUSTMQ_NO_EXTENSIONS=1, so both backends pass the same behaviour."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITES = [
    "tests/integration/test_mqtt_protocol.py",
    "tests/integration/test_mqtt_sessions.py",
    "tests/integration/test_mqtt_forwarding.py",
]


@pytest.mark.timeout(600)
def test_protocol_and_session_suites_pass_on_the_pure_python_twins():
    env = dict(os.environ, ROBUSTMQ_NO_EXTENSIONS="1")
    check = (
        "import robustmq._core as c; "
        "assert not any(c.compiled(m) for m in (c.mqtt, c.trie, c.lane, c.segments))"
    )
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *SUITES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
