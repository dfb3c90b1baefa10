"""``robustmq-server``: start, stop and check the configuration of a node.

Flags override environment variables, which override the config file (see
``robustmq.config``). Errors name the bad key or file and exit non-zero.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import click

from robustmq import __version__
from robustmq.config import ConfigError, describe_keys, load_config

_FLAG_KEYS = {
    "data_dir": "node.data_dir",
    "node_id": "node.id",
    "mqtt_port": "mqtt.port",
    "mqtts_port": "mqtt.tls_port",
    "ws_port": "mqtt.ws_port",
    "wss_port": "mqtt.wss_port",
    "kafka_port": "kafka.port",
    "http_port": "http.port",
    "grpc_port": "cluster.grpc_port",
    "storage": "storage.engine",
    "log_level": "log.level",
}


def _load(config_file: str | None, flags: dict[str, Any]) -> Any:
    overrides = {_FLAG_KEYS[k]: v for k, v in flags.items() if v is not None}
    try:
        return load_config(config_file, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="robustmq-server")
def main() -> None:
    """RobustMQ server: MQTT broker, meta service and storage engine in one process."""


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--data-dir", help="Data directory (default ./data).")
@click.option("--node-id", type=int, help="This node's id in the cluster.")
@click.option("--mqtt-port", type=int, help="MQTT TCP port (default 1883; 0 disables).")
@click.option("--mqtts-port", type=int, help="MQTT TLS port (default 8883, needs a certificate).")
@click.option("--ws-port", type=int, help="MQTT WebSocket port (default 8083, path /mqtt).")
@click.option("--wss-port", type=int, help="MQTT WebSocket/TLS port (default 8084).")
@click.option("--kafka-port", type=int, help="Kafka port (default 9092; 0 disables).")
@click.option("--http-port", type=int, help="HTTP /health, /ready, /metrics (default 8080).")
@click.option("--grpc-port", type=int, help="Meta service gRPC port (default 1228; 0 disables).")
@click.option(
    "--storage", type=click.Choice(["memory", "leveldb", "segment"]), help="Storage engine."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error", "critical"]),
    help="Log level.",
)
@click.option("--daemon", is_flag=True, help="Run in the background (needs --pid-file).")
@click.option("--pid-file", type=click.Path(dir_okay=False), help="Where --daemon writes the PID.")
def start(config_file: str | None, daemon: bool, pid_file: str | None, **flags: Any) -> None:
    """Run a node in the foreground (SIGINT/SIGTERM stop it gracefully)."""
    config = _load(config_file, flags)
    if daemon:
        if not pid_file:
            raise click.UsageError("--daemon needs --pid-file")
        _daemonize(config, pid_file)
        return
    from robustmq.node import run

    try:
        run(config)
    except ConfigError as exc:  # e.g. a bad line in the password or ACL file
        raise click.ClickException(f"cannot start: {exc}") from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot start: {exc.strerror or exc} (is another server on the same port? "
            "change it with --mqtt-port, --kafka-port or the config file)"
        ) from None


_DAEMON_START_TIMEOUT = 60.0


def _daemonize(config: Any, pid_file: str) -> None:
    os.makedirs(config.node.data_dir, exist_ok=True)
    log_path = os.path.join(config.node.data_dir, "robustmq.log")
    args = [a for a in sys.argv[1:] if a != "--daemon"]
    with open(log_path, "ab") as log_file:
        log_start = log_file.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "robustmq.cli.server", *args],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    with open(pid_file, "w") as fh:
        fh.write(f"{proc.pid}\n")
    # Return once the server says it is serving (its last start line), so a script can
    # connect right after this command.
    deadline = time.monotonic() + _DAEMON_START_TIMEOUT
    while True:
        if proc.poll() is not None:
            os.unlink(pid_file)
            raise click.ClickException(
                f"the server exited at start (code {proc.returncode}); see {log_path}"
            )
        with open(log_path, "rb") as fh:
            fh.seek(log_start)
            if b"robustmq: data directory" in fh.read():
                break
        if time.monotonic() > deadline:
            proc.terminate()
            os.unlink(pid_file)
            raise click.ClickException(
                f"the server did not finish starting in {_DAEMON_START_TIMEOUT:g} s "
                f"(stopped it); see {log_path}"
            )
        time.sleep(0.05)
    click.echo(f"robustmq: started in the background, PID {proc.pid}, log {log_path}")


@main.command()
@click.option("--pid-file", required=True, type=click.Path(dir_okay=False))
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for exit.")
def stop(pid_file: str, timeout: float) -> None:
    """Stop a server started with --daemon (SIGTERM, then wait)."""
    try:
        with open(pid_file) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read a PID from {pid_file}: {exc}") from None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        os.unlink(pid_file)
        raise click.ClickException(f"no process {pid} (stale {pid_file} removed)") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os.unlink(pid_file)
            click.echo(f"robustmq: stopped PID {pid}")
            return
        time.sleep(0.1)
    raise click.ClickException(f"PID {pid} still running after {timeout} s")


@main.command()
@click.argument("password_file", type=click.Path(dir_okay=False))
@click.argument("username")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="The password (prompted for when not given).",
)
def passwd(password_file: str, username: str, password: str) -> None:
    """Create or update a user in a password file ([auth] password_file).

    The entry holds a PBKDF2-SHA512 hash (mosquitto_passwd's $7$ format) and the user's
    SCRAM-SHA-256 credentials; the file is created if missing.
    """
    from robustmq.broker.auth.users import set_password

    try:
        new = set_password(password_file, username, password)
    except (ConfigError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"robustmq: user {username!r} {'added to' if new else 'updated in'} {password_file}")


@main.command("config-check")
@click.option("--config", "config_file", type=click.Path(dir_okay=False))
@click.option("--list", "list_keys", is_flag=True, help="List every key with its default.")
def config_check(config_file: str | None, list_keys: bool) -> None:
    """Validate a config file (and ROBUSTMQ_* variables); non-zero exit if invalid."""
    if list_keys:
        for key, default, allowed, doc in describe_keys():
            click.echo(f"{key} = {default!r}  # {doc}; {allowed}")
        return
    _load(config_file, {})
    click.echo(f"robustmq: {config_file or 'defaults'}: configuration is valid")


if __name__ == "__main__":
    main()
