"""Readable rich output of the answers of the ``eco.*`` standard endpoints.

Every function takes the response data exactly as the service sent it, so
``--json`` and the tables always show the same facts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.json import JSON
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from .core import stop_writing_to_a_closed_pipe

# Call groups of the statistics keeper, in display order, with titles and key column names.
GROUPS: dict[str, tuple[str, str]] = {
    "endpoints": ("Endpoints", "Endpoint"),
    "queued_handlers": ("Queued handlers", "Queued endpoint"),
    "senders": ("Senders (requests this service sent)", "Route @ target"),
}
_PERIOD_KEYS = {"start", "end", "queues", "custom"}


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # The reader stopped early (eco stats ... | head): not a failure of eco.
        stop_writing_to_a_closed_pipe()


def console() -> Console:
    """A console on the current stdout (looked up at print time, so test runners can capture it)."""
    return _Console(highlight=False, soft_wrap=False)


def fmt_time(timestamp: Any) -> str:
    """A Unix timestamp as local ``YYYY-MM-DD HH:MM:SS``; ``-`` when missing."""
    if not isinstance(timestamp, (int, float)):
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: Any) -> str:
    """Seconds as ``2d 03h 04m 05s`` (only the units needed)."""
    if not isinstance(seconds, (int, float)):
        return "-"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m {secs:02d}s"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{seconds:.1f}s"


def fmt_ms(value: Any) -> str:
    """A latency in milliseconds with three decimals; ``-`` when nothing was timed."""
    return "-" if not isinstance(value, (int, float)) else f"{value:.3f}"


def fmt_bool(value: Any, yes: str = "yes", no: str = "no") -> str:
    """A flag as a coloured word."""
    return f"[green]{yes}[/green]" if value else f"[red]{no}[/red]"


def compact_json(value: Any, limit: int = 60) -> str:
    """*value* as one line of JSON, cut to *limit* characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: Any) -> str:
    return escape(str(text))


# ----- statistics -------------------------------------------------------------


def render_statistics(out: Console, target: str, snapshot: dict[str, Any], kind: str) -> None:
    """The answer of ``eco.statistics.get`` for *kind* current, gathered or full."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("Service", _escape(target))
    head.add_row("Uptime", fmt_duration(snapshot.get("uptime")))
    head.add_row("Time", fmt_time(snapshot.get("timestamp")))
    head.add_row("Gathering period", f"{snapshot.get('gathering_period', '-')} s, "
                                     f"history of {snapshot.get('history_length', '-')} periods")
    out.print(head)
    if kind == "current":
        period = snapshot.get("current")
        if isinstance(period, dict):
            render_period(out, period, "Current period")
    elif kind == "gathered":
        period = snapshot.get("gathered")
        if isinstance(period, dict):
            render_period(out, period, "Last gathered period")
        else:
            out.print("\nNo period has been gathered yet: the first one closes one gathering period "
                      "after the start.")
    else:
        history = snapshot.get("history") or []
        if not history:
            out.print("\nNo period has been gathered yet.")
        for index, period in enumerate(history, 1):
            render_period(out, period, f"Period {index} of {len(history)}")


def render_period(out: Console, period: dict[str, Any], title: str) -> None:
    """Call tables, queue sizes and custom statistics of one period."""
    end = period.get("end")
    span = f"{fmt_time(period.get('start'))} → {fmt_time(end) if end else 'now'}"
    out.print(f"\n[bold underline]{title}[/bold underline]  {span}")
    groups = [g for g in GROUPS if g in period] + sorted(
        g for g in period if g not in GROUPS and g not in _PERIOD_KEYS
    )
    if not groups:
        out.print("No calls recorded in this period.")
    for group in groups:
        calls = period.get(group)
        if isinstance(calls, dict) and calls:
            title_text, key_name = GROUPS.get(group, (group.replace("_", " ").capitalize(), "Key"))
            out.print(call_table(title_text, key_name, calls, out.width))
    queues = period.get("queues")
    if isinstance(queues, dict) and queues:
        out.print(queue_size_table(queues))
    custom = period.get("custom")
    if isinstance(custom, dict) and custom:
        out.print(custom_tree(custom))


def call_table(title: str, key_name: str, calls: dict[str, Any], width: int = 120) -> Table:
    """Calls, errors by status and latency percentiles (milliseconds) per key.

    The key column gets what the number columns leave of *width* (the console's).
    """
    table = Table(title=f"{title} [dim](latency in ms)[/dim]", title_justify="left", title_style="bold",
                  box=box.SIMPLE_HEAD)
    longest = max((len(str(key)) for key in calls), default=8)
    table.add_column(key_name, overflow="fold", min_width=max(8, min(longest, width - 72)))
    for name in ("Calls", "Errors"):
        table.add_column(name, justify="right")
    table.add_column("By status")
    for name in ("p50", "p95", "p99", "max", "mean"):
        table.add_column(name, justify="right")
    for key, entry in calls.items():
        errors = entry.get("errors") or {}
        latency = entry.get("latency_ms") or {}
        failed = sum(v for v in errors.values() if isinstance(v, (int, float)))
        table.add_row(
            _escape(key),
            str(entry.get("calls", 0)),
            f"[red]{failed}[/red]" if failed else "0",
            " ".join(f"{status}×{count}" for status, count in errors.items()) or "-",
            *(fmt_ms(latency.get(name)) for name in ("p50", "p95", "p99", "max", "mean")),
        )
    return table


def queue_size_table(queues: dict[str, Any]) -> Table:
    """Sizes and state of every durable queue (``endpoint.<key>`` and ``sender.<name>``)."""
    table = Table(title="Queues", title_justify="left", title_style="bold")
    for name, justify in (("Queue", "left"), ("Kind", "left"), ("State", "left"),
                          ("Pending", "right"), ("Errors", "right"), ("Details", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for label, data in queues.items():
        kind, _, name = label.partition(".")
        if not isinstance(data, dict) or "error" in data:
            table.add_row(_escape(name or label), kind, "[red]unavailable[/red]", "-", "-",
                          _escape(data.get("error") if isinstance(data, dict) else data))
            continue
        errors = data.get("errors", 0)
        table.add_row(
            _escape(data.get("queue_route_key", name)),
            kind,
            queue_state(data),
            str(data.get("pending", "-")),
            f"[red]{errors}[/red]" if errors else str(errors),
            _escape(queue_details(data)),
        )
    return table


def queue_state(data: dict[str, Any]) -> str:
    """``running``, or what is paused."""
    if "sending" in data:
        return "running" if data["sending"] else "[yellow]sending paused[/yellow]"
    paused = [what for what in ("receiving", "processing") if data.get(what) is False]
    return "running" if not paused else f"[yellow]{' and '.join(paused)} paused[/yellow]"


def queue_details(data: dict[str, Any]) -> str:
    """The settings and counters of a queue that are not in their own column."""
    if "sending" in data:
        parts = [f"to {data.get('target', '?')}", f"in flight {data.get('in_flight', 0)}",
                 f"delivered {data.get('delivered', 0)}"]
        if data.get("sequenced"):
            parts.append("sequenced")
        if data.get("blocked_groups"):
            parts.append("blocked groups: " + ", ".join(map(str, data["blocked_groups"])))
        return "; ".join(parts)
    return f"max_retries {data.get('max_retries', '-')}; max_uncommitted {data.get('max_uncommitted', '-')}"


def custom_tree(custom: dict[str, Any]) -> Tree:
    """Custom statistics as a tree (dotted names nest)."""
    tree = Tree("[bold]Custom statistics[/bold]")
    _grow(tree, custom)
    return tree


def _grow(node: Tree, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            label = f"[bold]{_escape(key)}[/bold]"
            if "_" in value and not isinstance(value["_"], dict):
                label += f" = {_escape(value['_'])}"
            _grow(node.add(label), {k: v for k, v in value.items() if k != "_"})
        else:
            node.add(f"{_escape(key)} = [cyan]{_escape(json.dumps(value, default=str))}[/cyan]")


# ----- error states -----------------------------------------------------------


def render_error_states(out: Console, target: str, states: dict[str, Any]) -> None:
    """The answer of ``eco.error_states.get``."""
    if not states:
        out.print(f"[green]No error states raised[/green] on {_escape(target)}.")
        return
    table = Table(title=f"Error states of {_escape(target)}", title_justify="left", title_style="bold")
    table.add_column("Name", style="red", overflow="fold")
    table.add_column("Description", overflow="fold")
    table.add_column("Count", justify="right")
    table.add_column("First raised")
    table.add_column("Last raised")
    for name, state in states.items():
        table.add_row(_escape(name), _escape(state.get("description", "")), str(state.get("count", "")),
                      fmt_time(state.get("first_raised")), fmt_time(state.get("last_raised")))
    out.print(table)


# ----- queues -----------------------------------------------------------------


def render_queue_data(out: Console, data: Any, sender: bool) -> None:
    """The answer of ``eco.queued_handler.data`` / ``eco.queued_sender.data`` (one queue or a list)."""
    rows = data if isinstance(data, list) else [data]
    if not rows:
        what = "queued senders" if sender else "queued endpoints"
        out.print(f"This service has no {what}.")
        return
    if sender:
        table = Table(title="Queued senders", title_justify="left", title_style="bold")
        table.add_column("Sender", no_wrap=True)
        table.add_column("Target", overflow="fold")
        for name in ("Sending", "Pending", "In flight", "Errors", "Delivered"):
            table.add_column(name, justify="right")
        table.add_column("Blocked", overflow="fold")
        for row in rows:
            name = _escape(row.get("queue_route_key"))
            table.add_row(
                f"{name} (sequenced)" if row.get("sequenced") else name, _escape(row.get("target", "")),
                fmt_bool(row.get("sending"), "yes", "paused"), str(row.get("pending", 0)),
                str(row.get("in_flight", 0)), _errors(row), str(row.get("delivered", 0)),
                _escape(", ".join(map(str, row.get("blocked_groups") or [])) or "-"),
            )
    else:
        table = Table(title="Queued endpoints", title_justify="left", title_style="bold")
        for name in ("Queue", "Receiving", "Processing", "Pending", "Errors", "Max retries",
                     "Max uncommitted"):
            table.add_column(name, justify="left" if name == "Queue" else "right", overflow="fold")
        for row in rows:
            table.add_row(
                _escape(row.get("queue_route_key")), fmt_bool(row.get("receiving"), "yes", "paused"),
                fmt_bool(row.get("processing"), "yes", "paused"), str(row.get("pending", 0)),
                _errors(row), str(row.get("max_retries", "-")), str(row.get("max_uncommitted", "-")),
            )
    out.print(table)


def _errors(row: dict[str, Any]) -> str:
    errors = row.get("errors", 0)
    return f"[red]{errors}[/red]" if errors else str(errors)


def render_error_entries(out: Console, queue: str, entries: list[dict[str, Any]]) -> None:
    """The answer of ``errors.get_first_10``: the oldest entries of an error queue."""
    if not entries:
        out.print(f"[green]The error queue of {_escape(repr(queue))} is empty.[/green]")
        return
    grouped = any(e.get("group_key") is not None for e in entries)
    table = Table(title=f"Error queue of {_escape(repr(queue))} (oldest first, at most 10)",
                  title_justify="left", title_style="bold")
    table.add_column("UID", no_wrap=True)
    table.add_column("Attempts", justify="right")
    if grouped:
        table.add_column("Group")
    table.add_column("Failed at")
    table.add_column("Reason", overflow="fold")
    table.add_column("Request", overflow="fold")
    for entry in entries:
        row = [_escape(entry.get("uid")), str(entry.get("attempts", ""))]
        if grouped:
            row.append(_escape(entry.get("group_key") or "-"))
        row += [fmt_time(entry.get("failed_at")), _escape(entry.get("reason") or "-"),
                _escape(compact_json(entry.get("request")))]
        table.add_row(*row)
    out.print(table)


def render_error_entry(out: Console, title: str, entry: dict[str, Any]) -> None:
    """One error queue entry in full, its request as indented JSON."""
    out.print(f"[bold]{_escape(title)}[/bold]")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("UID", _escape(entry.get("uid")))
    grid.add_row("Attempts", str(entry.get("attempts")))
    if entry.get("group_key") is not None:
        grid.add_row("Group", _escape(entry.get("group_key")))
    grid.add_row("Created", fmt_time(entry.get("created")))
    grid.add_row("Failed at", fmt_time(entry.get("failed_at")))
    grid.add_row("Reason", _escape(entry.get("reason") or "-"))
    out.print(grid)
    out.print("[bold]Request[/bold]")
    out.print(JSON.from_data(entry.get("request"), default=str))


def render_data(out: Console, data: Any) -> None:
    """Any response data as indented JSON."""
    out.print(JSON.from_data(data, default=str))

