#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine: the MQTT command-line
# clients (mosquitto_pub/mosquitto_sub, used as real peers in integration tests) and the
# project itself with its test extras, compiled extensions required.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    echo "ci: installing mosquitto-clients and openssl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq mosquitto-clients openssl >/dev/null
fi

# A real Prometheus for tests/integration/test_grafana_dashboards.py (the test starts its
# own on a free port; the package's service is never started here).
if ! command -v prometheus >/dev/null 2>&1; then
    echo "ci: installing prometheus"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq prometheus >/dev/null
fi

# kafkajs for tests/integration/test_kafkajs.py, at the version package-lock.json pins.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "ci: installing nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/js/kafkajs/node_modules/kafkajs ]; then
    echo "ci: installing kafkajs (npm ci in tests/js/kafkajs)"
    (cd tests/js/kafkajs && npm ci --no-audit --no-fund --silent)
fi

echo "ci: installing robustmq with test extras (compiled extensions required)"
ROBUSTMQ_REQUIRE_EXTENSIONS=1 python -m pip install --quiet --disable-pip-version-check -e '.[test]'
python - <<'PY'
import robustmq._core as core
modules = [core.mqtt, core.kafka, core.trie, core.segments, core.lane, core.storm]
for module in modules:
    assert core.compiled(module), f"the compiled twin was not built ({module.__name__})"
print("ci: compiled extensions present:", ", ".join(m.__name__ for m in modules))
PY
