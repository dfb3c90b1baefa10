"""The final report of an MQTT bench run: merging worker results, rendering text or JSON.

``build`` adds up the workers' ``WorkerResult``s (counters, latency histograms, the
per-publisher sequence bitmaps of each receiving unit) into one dict with the fields the
JSON output documents; losses are counted against what each publisher sent when the
publishers ran in this process, and against the sequence gaps otherwise. ``render_text``
lays the same dict out as a table. The live progress line is ``runner.py``'s.
"""

from __future__ import annotations

from typing import Any

from robustmq.bench.config import MqttBenchConfig, UnitId, publishers_heard
from robustmq.bench.histogram import Histogram
from robustmq.bench.mqtt_client import new_errors
from robustmq.bench.mqtt_worker import WorkerResult
from robustmq.bench.payload import DeliveryTracker, publisher_key


def build(
    cfg: MqttBenchConfig, results: list[WorkerResult], window_s: float, interrupted: bool
) -> dict[str, Any]:
    errors = new_errors()
    for r in results:
        for name, n in r.errors.items():
            errors[name] += n
    head: dict[str, Any] = {
        "tool": "robustmq-bench",
        "mode": cfg.mode,
        "host": cfg.host,
        "port": cfg.port,
        "mqtt": cfg.version_name,
        "workers": cfg.workers,
        "interrupted": interrupted,
    }
    if cfg.mode == "conn":
        return head | _conn(cfg, results, errors)
    return head | _pubsub(cfg, results, window_s, errors)


def _conn(cfg: MqttBenchConfig, results: list[WorkerResult], errors: dict[str, int]) -> dict:
    latency = Histogram()
    for r in results:
        latency.merge(r.connack_latency)
    connected = sum(r.connected for r in results)
    connect_time = max((r.connect_time_s for r in results), default=0.0)
    return {
        "connections": cfg.clients,
        "connected": connected,
        "failed": errors["connect"],
        "connect_time_s": round(connect_time, 3),
        "connect_rate": round(connected / connect_time, 1) if connect_time > 0 else 0.0,
        "connack_latency_us": latency.summary(1000.0),
        "hold_s": cfg.hold,
        "dropped_during_hold": sum(r.dropped_during_hold for r in results),
        "errors": errors,
    }


def _pubsub(
    cfg: MqttBenchConfig, results: list[WorkerResult], window_s: float, errors: dict[str, int]
) -> dict:
    latency = Histogram()
    sent_by: dict[int, int] = {}
    units: dict[UnitId, DeliveryTracker] = {}
    for r in results:
        latency.merge(r.latency)
        sent_by.update(r.sent)
        for unit, tracker in r.units.items():
            if unit in units:
                units[unit].merge(tracker)
            else:
                units[unit] = tracker
    sent = sum(sent_by.values())
    received = sum(r.received for r in results)
    window_received = sum(r.received_window for r in results)
    expected, losses = _losses(cfg, sent_by, units)
    seconds = window_s if window_s > 0 else 1.0
    return {
        "qos": cfg.qos,
        "size": cfg.size,
        "publishers": cfg.publishers,
        "subscribers": cfg.subscribers,
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
        "losses": losses,
        "duplicates": sum(t.duplicates for t in units.values()),
        "reordered": sum(t.reordered for t in units.values()),
        "errors": errors,
    }


def _losses(
    cfg: MqttBenchConfig, sent_by: dict[int, int], units: dict[UnitId, DeliveryTracker]
) -> tuple[int, int]:
    """(expected deliveries, deliveries that never came)."""
    if not cfg.publishers:
        gaps = sum(t.gaps() for t in units.values())
        distinct = sum(s.distinct() for t in units.values() for s in t.publishers.values())
        return distinct + gaps, gaps
    # Every receiving unit whose filter matches a publisher's topic should get each of its
    # messages once, including units that received nothing at all.
    expected = losses = 0
    for unit, publishers in publishers_heard(cfg).items():
        tracker = units.get(unit, DeliveryTracker())
        for p in publishers:
            key = publisher_key(cfg.run_id, p)
            n = sent_by.get(key, 0)
            state = tracker.publishers.get(key)
            expected += n
            losses += n - (state.distinct(n) if state is not None else 0)
    return expected, losses


def render_text(report: dict[str, Any]) -> str:
    where = f"{report['host']}:{report['port']}"
    lines = [f"robustmq-bench mqtt {report['mode']}  {where}  MQTT {report['mqtt']}"]
    if report["interrupted"]:
        lines.append("interrupted: the figures cover the run until Ctrl-C")
    if report["mode"] == "conn":
        lat = report["connack_latency_us"]
        lines += [
            f"connections     {report['connected']} of {report['connections']} "
            f"({report['failed']} failed)",
            f"connect time    {report['connect_time_s']:.3f} s",
            f"connect rate    {report['connect_rate']:,.1f} conn/s",
            "CONNACK latency " + latency_line(lat),
            f"hold            {report['hold_s']:g} s, "
            f"{report['dropped_during_hold']} dropped by the broker",
        ]
    else:
        lines += [
            f"{plural(report['publishers'], 'publisher')}, "
            f"{plural(report['subscribers'], 'subscriber')}, "
            f"QoS {report['qos']}, {report['size']} B payload, {report['duration_s']:.3f} s",
            f"{'':14}{'messages':>12}{'msg/s':>14}{'MB/s':>10}",
            f"{'sent':14}{report['sent']:>12,}{report['send_rate']:>14,.1f}"
            f"{report['send_MBps']:>10.3f}",
            f"{'received':14}{report['received']:>12,}{report['recv_rate']:>14,.1f}"
            f"{report['recv_MBps']:>10.3f}",
            f"{'expected':14}{report['expected']:>12,}",
            "latency         " + latency_line(report["latency_us"]),
            f"losses {report['losses']}  duplicates {report['duplicates']}  "
            f"reordered {report['reordered']}",
        ]
    lines.append(errors_line(report["errors"]))
    return "\n".join(lines)


def errors_line(errors: dict[str, int]) -> str:
    """The report's error line: the kinds that happened with their counts, or none."""
    happened = ", ".join(f"{k} {v}" for k, v in errors.items() if v)
    return "errors          " + (happened or "none")


def latency_line(lat: dict[str, float]) -> str:
    return (
        f"p50 {lat['p50']:,.0f}  p90 {lat['p90']:,.0f}  p99 {lat['p99']:,.0f}  "
        f"p99.9 {lat['p999']:,.0f}  max {lat['max']:,.0f}  mean {lat['mean']:,.0f} us"
    )


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
