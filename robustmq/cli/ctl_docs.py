"""The robustmq-ctl reference of docs/operations.md, generated from the click commands
(``python -m robustmq.cli.ctl_docs`` prints it; a test checks the page is current). The
commands themselves are in ``ctl.py``."""

from __future__ import annotations

import click

from robustmq.cli.ctl import main


def _usage(command: click.Command, path: str) -> str:
    args = " ".join(p.human_readable_name for p in command.params if isinstance(p, click.Argument))
    return f"robustmq-ctl {path} {args}".rstrip()


def _options(command: click.Command) -> str:
    opts = []
    for p in command.params:
        if isinstance(p, click.Option):
            opts.append(f"`{'/'.join(p.opts)}`")
    return ", ".join(opts)


def markdown() -> str:
    """One row per command: usage, options and what it does."""
    rows = ["| command | options | what it does |", "|---|---|---|"]
    rows.append(f"| `robustmq-ctl` | {_options(main)} | {main.help} |")

    def walk(group: click.Group, path: str) -> None:
        for name, command in group.commands.items():
            full = f"{path} {name}".strip()
            # A group that does something on its own (cluster config) is a command too.
            if not isinstance(command, click.Group) or command.invoke_without_command:
                help_text = (command.help or "").splitlines()[0]
                rows.append(f"| `{_usage(command, full)}` | {_options(command)} | {help_text} |")
            if isinstance(command, click.Group):
                walk(command, full)

    walk(main, "")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
