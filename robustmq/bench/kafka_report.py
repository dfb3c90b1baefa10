"""The final report of a Kafka bench run: merging worker results, rendering text or JSON.

``build`` adds up the workers' ``KafkaWorkerResult``s (counters, the end-to-end and
Produce-answer latency histograms, the per-producer sequence bitmaps of the consumers)
into one dict with the fields the JSON output documents. All consumers of a run read the
topic's partitions between them, so together they are one receiving unit: each record
should arrive once. Losses are counted against what each producer sent when the producers
ran in this run, and against the sequence gaps otherwise (``consume`` alone). The MQTT
counterpart is ``report.py``; the live progress line is ``runner.py``'s.
"""

from __future__ import annotations

from typing import Any

from robustmq.bench.histogram import Histogram
from robustmq.bench.kafka_client import new_errors
from robustmq.bench.kafka_config import KafkaBenchConfig
from robustmq.bench.kafka_worker import KafkaWorkerResult
from robustmq.bench.payload import DeliveryTracker
from robustmq.bench.report import errors_line, latency_line, plural


def build(
    cfg: KafkaBenchConfig, results: list[KafkaWorkerResult], window_s: float, interrupted: bool
) -> dict[str, Any]:
    errors = new_errors()
    latency, ack_latency = Histogram(), Histogram()
    tracker = DeliveryTracker()
    sent_by: dict[int, int] = {}
    for r in results:
        for name, n in r.errors.items():
            errors[name] += n
        latency.merge(r.latency)
        ack_latency.merge(r.ack_latency)
        tracker.merge(r.tracker)
        sent_by.update(r.sent)
    sent = sum(sent_by.values())
    received = sum(r.received for r in results)
    window_received = sum(r.received_window for r in results)
    if not cfg.subscribers:
        expected = losses = 0
    elif cfg.publishers:
        expected = sent
        losses = sum(
            n - (tracker.publishers[key].distinct(n) if key in tracker.publishers else 0)
            for key, n in sent_by.items()
        )
    else:
        losses = tracker.gaps()
        expected = sum(s.distinct() for s in tracker.publishers.values()) + losses
    seconds = window_s if window_s > 0 else 1.0
    return {
        "tool": "robustmq-bench",
        "protocol": "kafka",
        "mode": cfg.mode,
        "host": cfg.host,
        "port": cfg.port,
        "topic": cfg.topic,
        "partitions": max((r.partitions for r in results), default=0),
        "workers": cfg.workers,
        "interrupted": interrupted,
        "acks": cfg.acks,
        "compression": cfg.compression,
        "linger_ms": cfg.linger_ms,
        "batch_bytes": cfg.batch_bytes,
        "size": cfg.size,
        "producers": cfg.publishers,
        "consumers": cfg.subscribers,
        "rate_per_client": cfg.rate,
        "duration_s": round(window_s, 3),
        "sent": sent,
        "acked": sum(r.acked for r in results),
        "received": received,
        "received_window": window_received,
        "expected": expected,
        "send_rate": round(sent / seconds, 1),
        "recv_rate": round(window_received / seconds, 1),
        "send_MBps": round(sent * cfg.size / seconds / 1e6, 3),
        "recv_MBps": round(window_received * cfg.size / seconds / 1e6, 3),
        "latency_us": latency.summary(1000.0),
        "produce_latency_us": ack_latency.summary(1000.0),
        "losses": losses,
        "duplicates": tracker.duplicates,
        "reordered": tracker.reordered,
        "errors": errors,
    }


def render_text(report: dict[str, Any]) -> str:
    where = f"{report['host']}:{report['port']}"
    lines = [
        f"robustmq-bench kafka {report['mode']}  {where}  topic {report['topic']} "
        f"({plural(report['partitions'], 'partition')})"
    ]
    if report["interrupted"]:
        lines.append("interrupted: the figures cover the run until Ctrl-C")
    lines += [
        f"{plural(report['producers'], 'producer')}, {plural(report['consumers'], 'consumer')}, "
        f"acks {report['acks']}, {report['compression']}, {report['size']} B records, "
        f"{report['duration_s']:.3f} s",
        f"{'':14}{'records':>12}{'records/s':>14}{'MB/s':>10}",
        f"{'sent':14}{report['sent']:>12,}{report['send_rate']:>14,.1f}"
        f"{report['send_MBps']:>10.3f}",
        f"{'received':14}{report['received']:>12,}{report['recv_rate']:>14,.1f}"
        f"{report['recv_MBps']:>10.3f}",
        f"{'acked':14}{report['acked']:>12,}",
        f"{'expected':14}{report['expected']:>12,}",
        "latency         " + latency_line(report["latency_us"]),
        "produce answer  " + latency_line(report["produce_latency_us"]),
        f"losses {report['losses']}  duplicates {report['duplicates']}  "
        f"reordered {report['reordered']}",
    ]
    lines.append(errors_line(report["errors"]))
    return "\n".join(lines)
