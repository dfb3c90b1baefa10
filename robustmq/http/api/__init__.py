"""The REST API under ``/api/v1``: one module per resource group (``cluster``, ``mqtt``,
``kafka``), each exporting its ``ROUTES``; ``common`` holds what they share. The full
route table, with /health, /ready, /metrics and the OpenAPI document, is in
``http/routes.py``."""
