"""The HTTP listener: health, readiness and Prometheus metrics (the REST API grows here)."""
