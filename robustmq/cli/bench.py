"""``robustmq-bench``: the load tool users run against a deployed broker.

Only the command-line surface lives here: ``robustmq-bench mqtt conn|pub|sub`` and
``robustmq-bench kafka produce|consume`` and their options, turned into a validated
``MqttBenchConfig`` or ``KafkaBenchConfig`` (a bad value is a usage error naming the
option), then the run and the final report on stdout (text or one JSON object). The load
engine is ``robustmq.bench``. Protocols are groups.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from typing import Any

import click

from robustmq.bench import kafka_report, kafka_worker, report, runner
from robustmq.bench.config import MqttBenchConfig, TlsOptions
from robustmq.bench.kafka_config import COMPRESSIONS, OFFSET_RESETS, KafkaBenchConfig
from robustmq.bench.mqtt_worker import run_worker
from robustmq.errors import BenchError, ConfigError

_VERSIONS = {"3": 3, "3.1": 3, "4": 4, "3.1.1": 4, "5": 5, "5.0": 5}
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _apply(options: list[Decorator]) -> Decorator:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


_CONNECTION = _apply(
    [
        click.option("--host", default="127.0.0.1", show_default=True, help="Broker host."),
        click.option("--port", default=1883, show_default=True, help="Broker MQTT port."),
        click.option("--username", help="User name sent in CONNECT."),
        click.option("--password", help="Password sent in CONNECT."),
        click.option(
            "--version",
            "version",
            type=click.Choice(list(_VERSIONS)),
            default="4",
            show_default=True,
            help="MQTT version: 3 (3.1), 4 (3.1.1) or 5 (5.0).",
        ),
        click.option("--keepalive", default=60, show_default=True, help="Keep Alive, seconds."),
        click.option("--tls", is_flag=True, help="Connect over TLS."),
        click.option("--cafile", default="", help="CA bundle to verify the broker (TLS)."),
        click.option("--certfile", default="", help="Client certificate, PEM (TLS)."),
        click.option("--keyfile", default="", help="Private key of --certfile, PEM (TLS)."),
        click.option("--insecure", is_flag=True, help="Do not verify the broker's certificate."),
        click.option(
            "--connect-timeout", default=10.0, show_default=True, help="Seconds per handshake."
        ),
        click.option(
            "--workers",
            default=1,
            show_default=True,
            help="Processes to spread the clients over (one event loop each).",
        ),
        click.option(
            "--max-pending",
            default=64,
            show_default=True,
            help="Connection handshakes in flight at once.",
        ),
        click.option(
            "--output",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            help="Final report format on stdout.",
        ),
    ]
)

_MESSAGES = _apply(
    [
        click.option("--qos", type=click.IntRange(0, 2), default=0, show_default=True),
        click.option(
            "--duration",
            type=float,
            default=None,
            help="Seconds to run (default 10 unless --count is given).",
        ),
    ]
)


def _config(mode: str, **options: Any) -> MqttBenchConfig:
    tls = None
    if options.pop("tls") or options["cafile"] or options["certfile"]:
        tls = TlsOptions(
            cafile=options["cafile"],
            certfile=options["certfile"],
            keyfile=options["keyfile"],
            insecure=options["insecure"],
        )
    for key in ("cafile", "certfile", "keyfile", "insecure", "output"):
        options.pop(key, None)
    options["version"] = _VERSIONS[options["version"]]
    if mode != "conn" and options.get("duration") is None:
        options["duration"] = 0.0 if options.get("count") else 10.0
    try:
        return MqttBenchConfig(mode=mode, tls=tls, run_id=secrets.randbits(32), **options)
    except ConfigError as exc:
        raise _usage_error(exc) from None


def _run(cfg: Any, output: str, worker: Any = run_worker, reporter: Any = report) -> None:
    """Runs the workers (MQTT by default; Kafka passes its worker and report module),
    prints the report, exits 130 after a Ctrl-C."""
    progress = sys.stderr if sys.stderr.isatty() else None
    try:
        outcome = runner.run(cfg, worker, progress)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    result = reporter.build(cfg, outcome.results, outcome.window_s, outcome.interrupted)
    if output == "json":
        click.echo(json.dumps(result))
    else:
        click.echo(reporter.render_text(result))
    if outcome.interrupted:
        sys.exit(130)


def _run_kafka(cfg: KafkaBenchConfig, output: str) -> None:
    _run(cfg, output, kafka_worker.run_worker, kafka_report)


def _usage_error(exc: ConfigError) -> click.UsageError:
    option = "--" + exc.key.replace("_", "-")
    return click.UsageError(f"{option}: bad value {exc.value!r}; allowed: {exc.allowed}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Measure a running broker: connection storms, publish/subscribe throughput and
    end-to-end latency, losses and duplicates."""


@main.group()
def mqtt() -> None:
    """MQTT 3.1/3.1.1/5.0 load: conn, pub, sub."""


@mqtt.command()
@_CONNECTION
@click.option("--clients", default=1000, show_default=True, help="Connections to open.")
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    help="Connections/s in total (0: as fast as --max-pending allows).",
)
@click.option("--hold", default=0.0, show_default=True, help="Seconds to keep them open.")
def conn(output: str, **options: Any) -> None:
    """Open --clients connections at --rate/s and report connect rate and CONNACK latency;
    with --hold, keep them open (PINGREQ every keepalive/2), then DISCONNECT."""
    _run(_config("conn", output=output, **options), output)


@mqtt.command()
@_CONNECTION
@_MESSAGES
@click.option("--clients", default=1, show_default=True, help="Publishers.")
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    help="Messages/s per publisher (0: as fast as possible).",
)
@click.option("--size", default=64, show_default=True, help="Payload bytes (at least 24).")
@click.option("--topic", default="bench/%i", show_default=True, help="Topic; %i = publisher index.")
@click.option("--count", default=0, help="Messages per publisher (instead of --duration).")
@click.option(
    "--inflight",
    default=64,
    show_default=True,
    help="Unacknowledged QoS 1/2 messages per publisher.",
)
@click.option("--subs", default=0, help="Also run this many subscribers, for end-to-end figures.")
@click.option(
    "--sub-topic", default=None, help="Their filter; %i = subscriber index (default: --topic)."
)
@click.option(
    "--drain", default=5.0, show_default=True, help="Most seconds to wait for deliveries after."
)
def pub(output: str, **options: Any) -> None:
    """Publish from --clients publishers; with --subs, subscribe too and report latency,
    losses, duplicates and reordering."""
    if options["sub_topic"] is None:
        options["sub_topic"] = options["topic"] if options["subs"] else ""
    _run(_config("pub", output=output, **options), output)


@mqtt.command()
@_CONNECTION
@_MESSAGES
@click.option("--clients", default=1, show_default=True, help="Subscribers.")
@click.option(
    "--topic",
    default="bench/#",
    show_default=True,
    help="Filter; %i = subscriber index; wildcards and $share/<group>/ allowed.",
)
@click.option(
    "--count", default=0, help="Messages per subscriber to wait for (instead of --duration)."
)
def sub(output: str, **options: Any) -> None:
    """Subscribe --clients subscribers and report what arrives from robustmq-bench
    publishers in other processes: rates, latency, duplicates, sequence gaps."""
    _run(_config("sub", output=output, **options), output)


# ---------------------------------------------------------------------------- kafka

_KAFKA_CONNECTION = _apply(
    [
        click.option("--bootstrap", help="Broker as HOST:PORT (instead of --host/--port)."),
        click.option("--host", default=None, help="Broker host.  [default: 127.0.0.1]"),
        click.option("--port", type=int, default=None, help="Broker Kafka port.  [default: 9092]"),
        click.option("--topic", default="robustmq-bench", show_default=True, help="Topic."),
        click.option(
            "--duration",
            type=float,
            default=None,
            help="Seconds to run (default 10 unless --count is given).",
        ),
        click.option(
            "--connect-timeout", default=10.0, show_default=True, help="Seconds per connect."
        ),
        click.option(
            "--fetch-max-wait-ms",
            default=500,
            show_default=True,
            help="Consumers: longest wait of a Fetch for data (long polling).",
        ),
        click.option(
            "--partition-max-bytes",
            default=8_388_608,
            show_default=True,
            help="Consumers: most bytes a Fetch returns per partition.",
        ),
        click.option(
            "--workers",
            default=1,
            show_default=True,
            help="Processes to spread the clients over (one event loop each).",
        ),
        click.option(
            "--output",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            help="Final report format on stdout.",
        ),
    ]
)
_ACKS = {"0": 0, "1": 1, "-1": -1, "all": -1}


def _kafka_config(mode: str, **options: Any) -> KafkaBenchConfig:
    bootstrap = options.pop("bootstrap")
    if bootstrap is not None:
        if options["host"] is not None or options["port"] is not None:
            raise click.UsageError("--bootstrap: give either --bootstrap or --host/--port")
        host, _, port = bootstrap.rpartition(":")
        if not host or not port.isdigit():
            raise click.UsageError(f"--bootstrap: bad value {bootstrap!r}; allowed: HOST:PORT")
        options["host"], options["port"] = host.strip("[]"), int(port)
    options["host"] = options["host"] or "127.0.0.1"
    options["port"] = 9092 if options["port"] is None else options["port"]
    options.pop("output")
    if options.get("duration") is None:
        options["duration"] = 0.0 if options.get("count") else 10.0
    try:
        return KafkaBenchConfig(mode=mode, run_id=secrets.randbits(32), **options)
    except ConfigError as exc:
        raise _usage_error(exc) from None


@main.group()
def kafka() -> None:
    """Kafka load with RobustMQ's own client: produce, consume."""


@kafka.command()
@_KAFKA_CONNECTION
@click.option("--clients", default=1, show_default=True, help="Producers (one connection each).")
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    help="Records/s per producer (0: as fast as possible).",
)
@click.option("--size", default=100, show_default=True, help="Record value bytes (at least 24).")
@click.option("--count", default=0, help="Records per producer (instead of --duration).")
@click.option(
    "--acks", type=click.Choice(list(_ACKS)), default="1", show_default=True, help="Produce acks."
)
@click.option(
    "--linger-ms", default=5.0, show_default=True, help="How long a batch waits to fill (--rate)."
)
@click.option(
    "--batch-bytes",
    default=1_048_576,
    show_default=True,
    help="Most bytes of records a batch holds.",
)
@click.option(
    "--partitions",
    default=0,
    show_default=True,
    help="Partitions of the topic when it has to be created (0: the broker's default).",
)
@click.option(
    "--compression", type=click.Choice(list(COMPRESSIONS)), default="none", show_default=True
)
@click.option(
    "--inflight", default=5, show_default=True, help="Produce requests in flight per producer."
)
@click.option("--consume", is_flag=True, help="Also consume, for end-to-end latency and losses.")
@click.option("--consumers", default=1, show_default=True, help="Consumers with --consume.")
@click.option(
    "--drain",
    default=5.0,
    show_default=True,
    help="Most seconds to wait for answers and records after.",
)
def produce(output: str, consume: bool, **options: Any) -> None:
    """Produce from --clients producers; with --consume, consume too and report end-to-end
    latency, losses, duplicates and reordering."""
    if not consume:
        options["consumers"] = 0
    options["acks"] = _ACKS[options["acks"]]
    _run_kafka(_kafka_config("produce", output=output, **options), output)


@kafka.command()
@_KAFKA_CONNECTION
@click.option("--clients", default=1, show_default=True, help="Consumers (one connection each).")
@click.option(
    "--group", default="", help="Resume from and commit to this group's offsets (no rebalancing)."
)
@click.option(
    "--offset-reset",
    type=click.Choice(list(OFFSET_RESETS)),
    default="latest",
    show_default=True,
    help="Where to start on a partition without a committed offset.",
)
def consume(output: str, **options: Any) -> None:
    """Consume the topic with --clients consumers (partitions split between them) and report
    what arrives from robustmq-bench producers: rates, latency, duplicates, sequence gaps."""
    _run_kafka(_kafka_config("consume", output=output, **options), output)


if __name__ == "__main__":
    main()
