"""The ``eco`` commands: statistics, error states, queues, any request, Prometheus metrics."""

import enum
import json
import sys
import uuid
from typing import Annotated, Any

import typer

from .. import __version__
from ..build import build_kind
from ..transport.client import encode_data
from . import render
from .core import (
    DEFAULT_TIMEOUT,
    EXIT_CODES_HELP,
    CliFailure,
    call,
    check_target,
    emit_json,
    handled,
    usage_error,
)

TARGET_HELP = "The service: [bold]tcp://HOST:PORT[/bold], [bold]udp://HOST:PORT[/bold] or [bold]uds:///PATH[/bold]."

TargetArg = Annotated[str, typer.Argument(metavar="TARGET", help=TARGET_HELP, show_default=False)]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print the response data as one JSON document instead of tables (errors: "
                   "{status, message, details}).")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", "-t", min=0.01, metavar="SECONDS",
    help="How long to wait for the connection and for the answer.")]
QueueArg = Annotated[str, typer.Argument(
    metavar="QUEUE", show_default=False,
    help="Route key of the queued endpoint, or name of the queued sender with --sender.")]
SenderOpt = Annotated[bool, typer.Option(
    "--sender", "-s", help="QUEUE is a queued sender (eco.queued_sender.*), not a queued endpoint.")]
UidArg = Annotated[str, typer.Argument(metavar="UID", show_default=False,
                                       help="UID of a request in the error queue (see 'eco queue errors').")]

app = typer.Typer(
    name="eco",
    help=(
        "Operate ecosys services from the command line: statistics, error states, durable queues, "
        "any request, and Prometheus metrics.\n\n"
        "Every command takes the service as TARGET (tcp://HOST:PORT, udp://HOST:PORT or uds:///PATH), "
        "sends it one of the standard eco.* requests and shows the answer as tables; "
        "[bold]--json[/bold] prints the answer as JSON instead."
    ),
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
errors_app = typer.Typer(
    help="Error states: named conditions the service reports as wrong right now.",
    no_args_is_help=True, epilog=EXIT_CODES_HELP, rich_markup_mode="rich",
)
queue_app = typer.Typer(
    help=(
        "Durable queues: queued endpoints (the default) and, with [bold]--sender[/bold], queued senders. "
        "Show sizes, pause and resume, and manage the error queue.\n\n"
        "Requests go to eco.queued_handler.* for a queued endpoint and to eco.queued_sender.* "
        "with --sender (FAMILY in the command descriptions)."
    ),
    no_args_is_help=True, epilog=EXIT_CODES_HELP, rich_markup_mode="rich",
)
def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"eco (ecosys {__version__}, {build_kind()})")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_print_version, is_eager=True,
        help="Print the ecosys version and exit.")] = False,
) -> None:
    """Options that apply before any command."""


app.add_typer(errors_app, name="errors")
app.add_typer(queue_app, name="queue")


def _family(sender: bool) -> str:
    return "eco.queued_sender" if sender else "eco.queued_handler"


def _queue_kind(sender: bool) -> str:
    return "queued sender" if sender else "queued endpoint"


def _show(json_output: bool, data: Any, draw: Any) -> None:
    """Print *data* as JSON, or call ``draw(console)`` to render it."""
    if json_output:
        emit_json(data)
    else:
        draw(render.console())


# ----- eco stats --------------------------------------------------------------------


class StatsType(enum.StrEnum):
    current = "current"
    gathered = "gathered"
    full = "full"


@app.command("stats", epilog=EXIT_CODES_HELP)
def stats_command(
    target: TargetArg,
    kind: Annotated[StatsType, typer.Option(
        "--type", case_sensitive=False,
        help="current: the running period; gathered: the last closed period; full: every kept period.",
    )] = StatsType.current,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Show statistics: uptime, calls, errors and latency per endpoint, queued handler and
    sent request, queue sizes and custom statistics (eco.statistics.get).

    Latencies are in milliseconds; "By status" counts failed calls per status code.
    """
    with handled(json_output):
        data = call(check_target(target), "eco.statistics.get", {"type": kind.value}, timeout=timeout)
        _show(json_output, data, lambda out: render.render_statistics(out, target, data, kind.value))


# ----- eco errors -------------------------------------------------------------------


@errors_app.command("get", epilog=EXIT_CODES_HELP)
def errors_get(
    target: TargetArg, json_output: JsonOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Show the error states raised now, with how often and when (eco.error_states.get)."""
    with handled(json_output):
        data = call(check_target(target), "eco.error_states.get", timeout=timeout)
        _show(json_output, data, lambda out: render.render_error_states(out, target, data))


@errors_app.command("clear", epilog=EXIT_CODES_HELP)
def errors_clear(
    target: TargetArg,
    names: Annotated[list[str] | None, typer.Argument(
        metavar="NAME", show_default=False,
        help="Error states to clear. [bold]Without names, every error state is cleared.[/bold]")] = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Clear error states, all of them or the NAMEs given (eco.error_states.clear).

    Prints the names that were raised and are now cleared; a name that was not
    raised is ignored. A condition that persists is raised again by the service.
    """
    with handled(json_output):
        data = call(check_target(target), "eco.error_states.clear",
                    {"names": list(names)} if names else {}, timeout=timeout)

        def draw(out: Any) -> None:
            cleared = (data.get("cleared") or []) if isinstance(data, dict) else []
            if cleared:
                out.print(f"Cleared {len(cleared)} error state(s): " + ", ".join(map(str, cleared)))
            else:
                out.print("Nothing to clear: none of these error states was raised." if names
                          else "Nothing to clear: no error state is raised.")

        _show(json_output, data, draw)


# ----- eco queue ----------------------------------------------------------------------


@queue_app.command("data", epilog=EXIT_CODES_HELP)
def queue_data(
    target: TargetArg,
    queue: Annotated[str | None, typer.Argument(
        metavar="QUEUE", show_default=False,
        help="One queue; every queued endpoint (or sender with --sender) when omitted.")] = None,
    sender: SenderOpt = False,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Show the state and sizes of queued endpoints, or of queued senders with --sender
    (eco.queued_handler.data / eco.queued_sender.data).

    With --json and no QUEUE the answer is a list, with QUEUE one object.
    """
    with handled(json_output):
        body = {"queue_route_key": queue} if queue else {}
        data = call(check_target(target), f"{_family(sender)}.data", body, timeout=timeout)
        _show(json_output, data, lambda out: render.render_queue_data(out, data, sender))


class PauseWhat(enum.StrEnum):
    receiving = "receiving"
    processing = "processing"
    all = "all"


WhatOpt = Annotated[PauseWhat, typer.Option(
    "--what", "-w", case_sensitive=False,
    help="receiving: refuse new requests (callers get status 500); processing: stop the worker, "
         "requests wait in the pending queue; all: both.")]


def _toggle(target: str, queue: str, route: str, json_output: bool, timeout: float, sender: bool,
            message: str) -> None:
    with handled(json_output):
        data = call(check_target(target), route, {"queue_route_key": queue}, timeout=timeout)

        def draw(out: Any) -> None:
            out.print(message)
            render.render_queue_data(out, data, sender)

        _show(json_output, data, draw)


@queue_app.command("pause", epilog=EXIT_CODES_HELP)
def queue_pause(
    target: TargetArg, queue: QueueArg, what: WhatOpt = PauseWhat.all,
    json_output: JsonOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Pause receiving, processing or both of a queued endpoint (eco.queued_handler.WHAT.pause).

    For a queued sender use 'eco queue sender-pause'.
    """
    _toggle(target, queue, f"eco.queued_handler.{what.value}.pause", json_output, timeout, False,
            f"Paused {'receiving and processing' if what is PauseWhat.all else what.value} of {queue!r}.")


@queue_app.command("unpause", epilog=EXIT_CODES_HELP)
def queue_unpause(
    target: TargetArg, queue: QueueArg, what: WhatOpt = PauseWhat.all,
    json_output: JsonOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Resume receiving, processing or both of a queued endpoint (eco.queued_handler.WHAT.unpause).

    For a queued sender use 'eco queue sender-unpause'.
    """
    _toggle(target, queue, f"eco.queued_handler.{what.value}.unpause", json_output, timeout, False,
            f"Resumed {'receiving and processing' if what is PauseWhat.all else what.value} of {queue!r}.")


SenderNameArg = Annotated[str, typer.Argument(metavar="NAME", show_default=False,
                                              help="Name of the queued sender.")]


@queue_app.command("sender-pause", epilog=EXIT_CODES_HELP)
def queue_sender_pause(
    target: TargetArg, name: SenderNameArg, json_output: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Stop a queued sender delivering; new messages still queue up (eco.queued_sender.send_process.pause)."""
    _toggle(target, name, "eco.queued_sender.send_process.pause", json_output, timeout, True,
            f"Paused sending of {name!r}.")


@queue_app.command("sender-unpause", epilog=EXIT_CODES_HELP)
def queue_sender_unpause(
    target: TargetArg, name: SenderNameArg, json_output: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Let a queued sender deliver again (eco.queued_sender.send_process.unpause)."""
    _toggle(target, name, "eco.queued_sender.send_process.unpause", json_output, timeout, True,
            f"Resumed sending of {name!r}.")


@queue_app.command("errors", epilog=EXIT_CODES_HELP)
def queue_errors(
    target: TargetArg, queue: QueueArg, sender: SenderOpt = False,
    json_output: JsonOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """List the first 10 (oldest) requests of a queue's error queue, with why they failed
    (FAMILY.errors.get_first_10).

    'eco queue data' shows how many there are in all.
    """
    with handled(json_output):
        data = call(check_target(target), f"{_family(sender)}.errors.get_first_10",
                    {"queue_route_key": queue}, timeout=timeout)
        _show(json_output, data, lambda out: render.render_error_entries(out, queue, data or []))


@queue_app.command("reprocess", epilog=EXIT_CODES_HELP)
def queue_reprocess(
    target: TargetArg,
    queue: QueueArg,
    uid: Annotated[str | None, typer.Argument(
        metavar="UID", show_default=False,
        help="The request to move back to the pending queue (give UID or --all).")] = None,
    all_: Annotated[bool, typer.Option(
        "--all", "-a", help="Reprocess every request of the error queue.")] = False,
    sender: SenderOpt = False,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Move one request (UID) or all of them (--all) from the error queue back to the pending
    queue, to be handled or sent again (FAMILY.errors.reprocess.one / .all).
    """
    with handled(json_output):
        if (uid is None) == (not all_):
            raise usage_error("give either a request UID or --all (not both)")
        body: dict[str, Any] = {"queue_route_key": queue}
        if all_:
            route = "errors.reprocess.all"
        else:
            route, body["request_uid"] = "errors.reprocess.one", uid
        data = call(check_target(target), f"{_family(sender)}.{route}", body, timeout=timeout)
        count = data.get("reprocessed", 0) if isinstance(data, dict) else 0
        _show(json_output, data, lambda out: out.print(
            f"Reprocessed {count} request(s) from the error queue of {_queue_kind(sender)} {queue!r}."))


@queue_app.command("inspect", epilog=EXIT_CODES_HELP)
def queue_inspect(
    target: TargetArg, queue: QueueArg, uid: UidArg, sender: SenderOpt = False,
    json_output: JsonOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Show one request of the error queue in full, leaving it there (FAMILY.errors.inspect_request)."""
    with handled(json_output):
        data = call(check_target(target), f"{_family(sender)}.errors.inspect_request",
                    {"queue_route_key": queue, "request_uid": uid}, timeout=timeout)
        _show(json_output, data, lambda out: render.render_error_entry(
            out, f"Error queue entry of {_queue_kind(sender)} {queue!r}", data))


@queue_app.command("pop", epilog=EXIT_CODES_HELP)
def queue_pop(
    target: TargetArg, queue: QueueArg, uid: UidArg, sender: SenderOpt = False,
    json_output: JsonOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Remove one request from the error queue and print it; it will not run again
    (FAMILY.errors.pop_request). Save the output if you may need the request later.
    """
    with handled(json_output):
        data = call(check_target(target), f"{_family(sender)}.errors.pop_request",
                    {"queue_route_key": queue, "request_uid": uid}, timeout=timeout)
        _show(json_output, data, lambda out: render.render_error_entry(
            out, f"Removed from the error queue of {_queue_kind(sender)} {queue!r}", data))


@queue_app.command("clear", epilog=EXIT_CODES_HELP)
def queue_clear(
    target: TargetArg, queue: QueueArg, sender: SenderOpt = False,
    json_output: JsonOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Delete every request of a queue's error queue, for good (FAMILY.errors.clear).

    There is no undo: look at them first with 'eco queue errors' or save them with --json.
    """
    with handled(json_output):
        data = call(check_target(target), f"{_family(sender)}.errors.clear",
                    {"queue_route_key": queue}, timeout=timeout)
        count = data.get("cleared", 0) if isinstance(data, dict) else 0
        _show(json_output, data, lambda out: out.print(
            f"Cleared {count} request(s) from the error queue of {_queue_kind(sender)} {queue!r}."))


# ----- eco send -------------------------------------------------------------------------


def parse_json_argument(text: str | None) -> Any:
    """The request data: None when omitted, stdin for ``-``, otherwise the JSON text."""
    if text is None:
        return None
    try:
        if text == "-":
            text = sys.stdin.read()
        value = json.loads(text, parse_constant=_not_json)
    except UnicodeDecodeError as exc:
        raise usage_error(f"invalid JSON argument: stdin is not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise usage_error(f"invalid JSON argument: {exc}") from None
    check_sendable(value)
    return value


def _not_json(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not (they would go out as null).
    raise ValueError(f"{name} is not JSON")


def check_sendable(value: Any) -> None:
    """Fail with a usage error unless *value* goes out exactly as it was given."""
    # Found here rather than in the client: a request that cannot be encoded
    # would otherwise read as an odd answer from the service (exit 3), and a
    # number that overflows to inf would silently be sent as null.
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end]
        raise usage_error(f"invalid JSON argument: {bad!r} is not UTF-8 text (a lone surrogate escape, "
                          "or a byte that is not UTF-8)") from None
    except ValueError:
        raise usage_error("invalid JSON argument: a number is too large (it overflows to infinity, "
                          "which JSON cannot carry)") from None
    except RecursionError:
        raise usage_error("invalid JSON argument: cannot be sent (nested too deeply)") from None
    try:
        encode_data(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise usage_error(f"invalid JSON argument: cannot be sent ({exc})") from None


@app.command("send", epilog=EXIT_CODES_HELP)
def send_command(
    target: TargetArg,
    route_key: Annotated[str, typer.Argument(metavar="ROUTE_KEY", show_default=False,
                                             help="The endpoint to call, e.g. echo or eco.statistics.get.")],
    data: Annotated[str | None, typer.Argument(
        metavar="JSON", show_default=False,
        help="The request data as JSON (quote it for the shell); '-' reads it from stdin; "
             "omitted: no data (null).")] = None,
    uid: Annotated[str | None, typer.Option(
        "--uid", "-u", metavar="UUID", show_default=False,
        help="The request uid (default: a fresh one), e.g. to trace a request through the system.")] = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Send one request to any endpoint and print the response data.

    Example: eco send tcp://127.0.0.1:8888 echo '{"message": "hi"}'
    """
    with handled(json_output):
        check_target(target)
        body = parse_json_argument(data)
        if uid is not None:
            try:
                uid = str(uuid.UUID(uid))
            except ValueError:
                raise usage_error(f"--uid {uid!r} is not a UUID") from None
        answer = call(target, route_key, body, timeout=timeout, uid=uid)
        _show(json_output, answer, lambda out: render.render_data(out, answer))


# ----- eco metrics ----------------------------------------------------------------------


@app.command("metrics", epilog=EXIT_CODES_HELP)
def metrics_command(
    targets: Annotated[list[str], typer.Argument(
        metavar="TARGET", show_default=False,
        help="Services to scrape, as URL or NAME=URL (NAME becomes the service label; "
             "default: the URL).")],
    listen: Annotated[str | None, typer.Option(
        "--listen", "-l", metavar="HOST:PORT", show_default=False,
        help="Serve the metrics over HTTP on /metrics until Ctrl-C, asking the services at "
             "every scrape, instead of printing them once.")] = None,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print what each service answered (and whether it is up) as JSON instead.")] = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", "-t", min=0.01, metavar="SECONDS",
        help="Per service; keep it below Prometheus' scrape_timeout.")] = DEFAULT_TIMEOUT,
) -> None:
    """Print the statistics and error states of services in the Prometheus text format, or
    serve them with --listen.

    A service that is down shows as ecosys_up 0 (and a note on stderr); the others are still
    reported, and the exit code is 0.
    """
    from .metrics import EcosysCollector, exposition, parse_listen, parse_scrape_target, serve

    with handled(json_output):
        if listen is not None and json_output:
            raise usage_error("--json and --listen do not go together")
        scrape_targets = [parse_scrape_target(t) for t in targets]
        services = [t.service for t in scrape_targets]
        repeated = sorted({name for name in services if services.count(name) > 1})
        if repeated:
            # Two targets with one service label would export clashing series.
            raise usage_error("each target needs its own service name; given more than once: "
                              + ", ".join(repeated))
        collector = EcosysCollector(scrape_targets, timeout)
        if listen is not None:
            host, port = parse_listen(listen)
            serve(collector, host, port)
            return
        if json_output:
            emit_json({"targets": [s.as_json() for s in collector.scrape()]})
        else:
            text = exposition(collector)
            for result in collector.last:
                if result.error:
                    print(f"eco: {result.target.service} is down: {result.error}", file=sys.stderr)
                for note in result.notes:
                    print(f"eco: {result.target.service}: {note}", file=sys.stderr)
            sys.stdout.write(text)


def main() -> None:
    """Entry point of the ``eco`` console script."""
    try:
        app(prog_name="eco")
    except CliFailure as failure:  # raised outside a command (should not happen): still one line
        print(failure.message, file=sys.stderr)
        sys.exit(failure.code)
