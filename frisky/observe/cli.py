"""``frisky observe VIEW [URL] [--json]``: look inside a running cluster through its
dashboard's JSON API, as text that fits 100 columns or as the API's JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from frisky.observe import fetch
from frisky.observe.fetch import ObserveError
from frisky.observe.page import Context
from frisky.observe.text import Style
from frisky.observe.views import VIEWS, summary

PROG = "frisky observe"
_DATA_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError)


def _since(text: str) -> float:
    """Seconds back: ``90``, ``90s``, ``5m``, ``1h``."""
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:].lower(), None)
    number = text[:-1] if scale else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (give seconds, or 90s, 5m, 1h)") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text!r}")
    return value


def _limit(text: str) -> int:
    from frisky.cli import args as cli

    value = cli.positive_int(text)
    if value > 10000:
        raise argparse.ArgumentTypeError(f"at most 10000, not {value}")
    return value


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds, not {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    from frisky.cli import args as cli

    p = cli.Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{PROG} VIEW [URL] [--json] [options]",
        description="Look inside a running Frisky cluster (tasks, workers, memory, time) through its\n"
                    "dashboard's JSON API. Each view ends with '→' lines naming the next command to run.\n\n"
                    f"views:\n{summary()}",
        epilog="URL: the dashboard (default: $FRISKY_DASHBOARD, then the \"dashboard\" of the connection\n"
               "file ($FRISKY_CONNECTION or ./frisky.json), then http://127.0.0.1:8787).\n"
               f"Options of one view: {PROG} VIEW --help.")
    sub = p.add_subparsers(dest="view", metavar="VIEW", required=True, parser_class=cli.Parser)
    for view in VIEWS.values():
        sp = sub.add_parser(view.name, prog=f"{PROG} {view.name}", description=view.help.capitalize() + ".")
        sp.add_argument("url", nargs="?", metavar="URL", help="dashboard URL, e.g. http://127.0.0.1:8787")
        sp.add_argument("--json", action="store_true", help="print the API's JSON instead of text")
        sp.add_argument("--timeout", type=_timeout, default=10.0, help="seconds to wait for the dashboard (10)")
        if view.name == "timeline":
            sp.add_argument("--view", dest="timeline_view", choices=("component", "detailed"), default="component",
                            help="component: compute/network/disk/scheduler/other; detailed: per span type")
            sp.add_argument("--prefix", help="only tasks with this key prefix")
            sp.add_argument("--worker", help="only this worker (its name)")
            sp.add_argument("--since", type=_since, default=None, help="seconds back to show (default 60; 5m, 1h)")
        elif view.name == "spans":
            sp.add_argument("--name", help="span name, e.g. worker.exec.call (default: every name)")
            sp.add_argument("--limit", type=_limit, default=20, help="most recent spans to show (default 20)")
    return p


def params(args: argparse.Namespace) -> dict[str, Any]:
    """The API query for a view's options."""
    if args.view == "timeline":
        return {"view": args.timeline_view, "prefix": args.prefix, "worker": args.worker,
                "since": None if args.since is None else f"{args.since:g}"}
    if args.view == "spans":
        return {"name": args.name, "limit": args.limit}
    return {}


def show(view: str, url: str, *, out: TextIO | None = None, json_output: bool = False,
         options: dict[str, Any] | None = None, explicit_url: bool = True, timeout: float = 10.0,
         style: Style | None = None) -> None:
    """Fetch ``view``'s data from the dashboard at ``url`` and write it to ``out``;
    :class:`ObserveError` (one line) if it cannot."""
    out = sys.stdout if out is None else out
    spec = VIEWS[view]
    options = dict(options or {})
    query = {k: v for k, v in options.items() if k in ("view", "prefix", "worker", "since", "name", "limit")}
    data = fetch.get(url, spec.endpoint, query, timeout=timeout)
    if json_output:
        out.write(json.dumps(data, indent=1) + "\n")
        return
    ctx = Context(url=url, explicit_url=explicit_url, style=style or Style.for_stream(out), options=options)
    try:
        page = spec.render_fn()(data, ctx)
    except _DATA_ERRORS as e:  # the server's reply, not our bug: say so in one line
        raise ObserveError(f"{url}/api/v1/{spec.endpoint} sent data the {view} view cannot read "
                           f"({type(e).__name__}: {e})") from None
    out.write(page)
    out.flush()


def main(argv: list[str] | None = None) -> None:
    from frisky.cli import args as cli

    args = parser().parse_args(argv)
    try:
        url = fetch.resolve_url(args.url)
        show(args.view, url, json_output=args.json, options=params(args), explicit_url=bool(args.url),
             timeout=args.timeout)
    except ObserveError as e:
        cli.fail(PROG, str(e))
    except BrokenPipeError:  # `frisky observe ... | head`: the reader had enough
        sys.stderr.close()
