"""The load engine behind ``robustmq-bench``: clients, workers, histogram and reports.

``config`` (what a run does), ``payload`` (the timestamped, numbered payload header and the
delivery accounting), ``histogram`` (latency percentiles), ``mqtt_client`` (asyncio MQTT
clients on the ``_core`` codec), ``mqtt_worker`` (one worker's share of the clients),
``channel`` (coordinator <-> worker messages), ``runner`` (workers, phases, progress line)
and ``report`` (merge, text, JSON). The command line is ``robustmq.cli.bench``.
"""
