"""The HTTP listener: the REST API under /api/v1 (``api/``), its route table
(``routes.py``) and OpenAPI document (``openapi.py``), /health, /ready and /metrics."""
