#!/usr/bin/env bash
# Runs the README's test command. pytest's exit code 5 (no tests collected) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
python -m pytest
status=$?
if [ "$status" -eq 5 ]; then
    echo "ci: pytest collected no tests; failing" >&2
    exit 1
fi
exit "$status"
