"""The `frisky observe` renderers and plumbing, on replies shaped as API v1 says
(tests/observe_samples.py) and on hostile ones; a real HTTP server plays the dashboard
where the CLI's errors are checked. Views against real clusters: tests/test_observe.py."""

from __future__ import annotations

import copy
import http.server
import json
import os
import shlex
import socket
import subprocess
import sys
import threading

import observe_samples as S
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frisky.observe import cli, fetch, text
from frisky.observe.fetch import ObserveError
from frisky.observe.page import Context
from frisky.observe.text import Style
from frisky.observe.views import VIEWS

URL = "http://127.0.0.1:8787"


def render(view_name: str, data: dict, /, *, colour: bool = False, explicit: bool = False, **options) -> str:
    ctx = Context(url=URL, explicit_url=explicit, style=Style(colour), options=options)
    return VIEWS[view_name].render_fn()(data, ctx)


CASES = [(name, data, {}) for name, data in S.ALL.items()] + [
    ("timeline", S.TIMELINE_DETAILED, {"view": "detailed"}),
    ("spans", S.SPANS, {"name": "worker.exec.call", "limit": 20}),
    ("timeline", S.TIMELINE, {"view": "component", "prefix": "inc", "worker": "a worker; rm -rf /"}),
]


@pytest.mark.parametrize("view, data, options", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_view_fits_100_columns_is_plain_off_a_terminal_and_ends_with_hints(view, data, options):
    out = render(view, data, **options)
    lines = out.rstrip("\n").split("\n")
    assert max(len(line) for line in lines) <= text.WIDTH, out
    assert "\x1b" not in out
    hints = []
    for line in reversed(lines):
        if not line.startswith("→ "):
            break
        hints.append(line)
    assert hints, out
    for line in hints:  # each hint is a command `frisky observe` accepts as it stands
        words = shlex.split(line[2:].split("  #")[0])
        assert words[:2] == ["frisky", "observe"], line
        cli.parser().parse_args(words[2:])
    coloured = render(view, data, colour=True, **options)
    assert "\x1b[" in coloured
    assert [text.visible(line) for line in coloured.split("\n")] == out.split("\n")


def test_hints_repeat_a_url_the_user_gave_and_follow_the_data():
    out = render("overview", S.OVERVIEW, explicit=True)
    assert f"→ frisky observe blocked {URL}" in out  # a task erred
    assert f"→ frisky observe stragglers {URL}" in out  # outliers exist
    calm = copy.deepcopy(S.OVERVIEW)
    calm["tasks"].update(erred=0, waiting=0, queued=0, processing=0)
    calm["workers"]["paused"] = 0
    calm["outliers"] = []
    out = render("overview", calm)
    assert "observe blocked" not in out and "observe stragglers" not in out
    stuck = copy.deepcopy(calm)
    stuck["tasks"].update(waiting=5, processing=0)
    assert "→ frisky observe blocked" in render("overview", stuck).splitlines()[-3]
    out = render("stragglers", S.STRAGGLERS)
    assert "→ frisky observe timeline --view detailed --worker 3" in out
    assert "→ frisky observe spans --name worker.exec.call" in out
    assert "No worker is slower" in render("stragglers", {**S.STRAGGLERS, "workers": S.STRAGGLERS["workers"][1:]})


def test_views_show_the_numbers_formatted():
    out = render("overview", S.OVERVIEW)
    for words in ("123,456 tasks submitted", "used 3.0 GiB of 8.0 GiB (38%)", "peak 5.0 GiB", "spilled 900 MiB",
                  "unspilled 600 MiB", "received 12.0 GiB", "erred 1", "queued 340", "up 12m 34s", "12.3M spans"):
        assert words in out, words
    compute = next(line for line in out.splitlines() if line.startswith("compute "))
    assert "█" in compute and compute.endswith("72%")
    blocked = render("blocked", S.BLOCKED)
    assert "no-matching-worker: 7 tasks" in blocked and "needs worker no-such-worker" in blocked
    assert "sleepy-0 · on worker 1 · for 2m 05s" in blocked
    assert blocked.index("no-matching-worker") < blocked.index("long-running")
    workers = render("workers", S.WORKERS)
    assert "paused" in workers and "silent 30 s" in workers and "inc 3.0 s +2" in workers
    assert "1 of 3 workers" in render("stragglers", S.STRAGGLERS)
    assert "20.0× (200 ms vs 10 ms, 200 calls)" in render("stragglers", S.STRAGGLERS)
    assert "p99 31 ms" in render("spans", S.SPANS, name="worker.exec.call")
    assert "… 8 more series" in render("timeline", S.TIMELINE_DETAILED, view="detailed")


@pytest.mark.parametrize("fn, value, shown", [
    (text.fmt_bytes, 0, "0 B"), (text.fmt_bytes, 1536, "1.5 KiB"), (text.fmt_bytes, 300 * 2**20, "300 MiB"),
    (text.fmt_bytes, 12 * 2**30, "12.0 GiB"), (text.fmt_seconds, 0.00042, "420 µs"),
    (text.fmt_seconds, 0.0123, "12 ms"), (text.fmt_seconds, 3.44, "3.4 s"), (text.fmt_seconds, 125, "2m 05s"),
    (text.fmt_seconds, 3720, "1h 02m"), (text.fmt_count, 1234567, "1,234,567"), (text.fmt_count, 12345678, "12.3M"),
    (text.fmt_size, 3 * 2**30, "3.0G"), (text.fmt_size, 300 * 2**20, "300M"), (text.fmt_size, 512, "512"),
    (text.fmt_bytes, float("nan"), "?"),
])
def test_numbers_read_at_a_glance(fn, value, shown):
    assert fn(value) == shown


def test_sparkline_scales_to_the_largest_and_folds_to_its_width():
    assert text.sparkline([0, 1, 2, 4], 10) == "  ▂▂▄▄██"
    assert text.sparkline([0, 1, 2, 4], 6) == " ▂▄█"
    line = text.sparkline(list(range(600)), 60)
    assert len(line) == 60 and line[-1] == "█" and line[0] == "▁"
    assert text.sparkline([0, 0], 5) == "    " and text.sparkline([], 5) == ""


def test_hostile_text_cannot_move_the_cursor_or_widen_a_line():
    data = copy.deepcopy(S.WORKERS)
    data["workers"][0]["name"] = "\x1b[2J\rwide 名前名前名前" * 10
    out = render("workers", data)
    assert "\x1b" not in out and "\r" not in out and "名" not in out
    assert max(len(line) for line in out.splitlines()) <= text.WIDTH


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=10)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(view=st.sampled_from(sorted(S.ALL)), data=st.data(), value=_json, delete=st.booleans())
def test_a_reply_of_any_shape_renders_or_is_refused_as_unreadable(view, data, value, delete):
    reply = copy.deepcopy(S.ALL[view])
    paths = [p for p in _paths(reply) if p]
    path = data.draw(st.sampled_from(paths))
    parent = reply
    for k in path[:-1]:
        parent = parent[k]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        out = render(view, reply)
    except cli._DATA_ERRORS:
        return  # show() turns these into one line, exit status 2
    assert max(len(line) for line in out.splitlines()) <= text.WIDTH


# --------------------------------------------------------------- URL and replies


def test_url_comes_from_the_argument_then_env_then_connection_file_then_default(tmp_path, monkeypatch):
    for var in ("FRISKY_DASHBOARD", "FRISKY_CONNECTION", "FRISKY_SCHEDULER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    assert fetch.resolve_url() == fetch.DEFAULT_URL
    from frisky.deploy.launch import connection

    connection.write("frisky.json", "tcp://10.0.0.1:8786", dashboard="http://10.0.0.1:8787")
    assert fetch.resolve_url() == "http://10.0.0.1:8787"
    connection.write(str(tmp_path / "other.json"), "tcp://10.0.0.2:8786", dashboard="http://10.0.0.2:9999/")
    monkeypatch.setenv("FRISKY_CONNECTION", str(tmp_path / "other.json"))
    assert fetch.resolve_url() == "http://10.0.0.2:9999"
    monkeypatch.setenv("FRISKY_DASHBOARD", "10.0.0.3:8787")
    assert fetch.resolve_url() == "http://10.0.0.3:8787"
    assert fetch.resolve_url("http://h:1/api/v1/") == "http://h:1"
    monkeypatch.delenv("FRISKY_DASHBOARD")
    connection.write(str(tmp_path / "other.json"), "tcp://10.0.0.2:8786", dashboard=None)
    with pytest.raises(ObserveError, match="names no dashboard"):
        fetch.resolve_url()
    (tmp_path / "other.json").write_text("{not json")
    with pytest.raises(ObserveError, match="not JSON"):
        fetch.resolve_url()
    for bad in ("ftp://h:1", "http://", "http://h:port"):
        with pytest.raises(ObserveError, match="not a dashboard URL"):
            fetch.resolve_url(bad)


class _Server:
    """A real HTTP server on a free port answering every GET with (status, body)."""

    def __init__(self, status: int, body: bytes) -> None:
        reply = (status, body)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(reply[0])
                self.send_header("Content-Length", str(len(reply[1])))
                self.end_headers()
                self.wfile.write(reply[1])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def _observe(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frisky.cli.main", "observe", *argv], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("status, body, says", [
    (200, b"<html>hello</html>", "did not return JSON"),
    (200, b'{"something": "else"}', "not Frisky's API v1"),
    (200, b"[1, 2, 3]", "not Frisky's API v1"),
    (404, b'{"error": "no such endpoint"}', "HTTP 404 no such endpoint"),
    (500, b"boom", "HTTP 500"),
    (404, b"<html>not found</html>", "no Frisky API v1 at"),
    (200, json.dumps({"version": 1, "now": 1.0, "workers": {"total": "many"}}).encode(), "cannot read"),
])
def test_a_bad_reply_is_one_line_and_status_2(status, body, says):
    server = _Server(status, body)
    try:
        out = _observe("overview", server.url)
    finally:
        server.close()
    assert out.returncode == 2, out
    assert says in out.stderr and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_the_json_of_a_reply_is_printed_as_it_came():
    server = _Server(200, json.dumps(S.STRAGGLERS).encode())
    try:
        out = _observe("stragglers", server.url, "--json")
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == S.STRAGGLERS


@pytest.mark.parametrize("argv, says", [
    (["overview", "http://127.0.0.1:{port}"], "no Frisky dashboard answers at http://127.0.0.1:{port}"),
    (["overview", "ftp://x"], "not a dashboard URL"),
    (["nope"], "invalid choice"),
    ([], "required"),
    (["spans", "--limit", "0"], "at least 1"),
    (["spans", "--limit", "20000"], "at most 10000"),
    (["timeline", "--view", "sideways"], "invalid choice"),
    (["timeline", "--since", "-5"], "more than 0"),
    (["timeline", "--since", "soon"], "not a duration"),
    (["overview", "--timeout", "0"], "between 0 and 3600"),
])
def test_bad_arguments_and_no_dashboard_are_one_line_and_status_2(argv, says):
    port = _free_port()
    out = _observe(*[a.format(port=port) for a in argv], env={"FRISKY_DASHBOARD": f"127.0.0.1:{port}"})
    assert out.returncode == 2, out
    assert says.format(port=port) in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_help_describes_every_view_in_one_line_within_100_columns():
    top = subprocess.run([sys.executable, "-m", "frisky.cli.main", "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    own = _observe("--help").stdout
    for out in (top, own):
        for view in VIEWS.values():
            assert len([line for line in out.splitlines() if line.strip().startswith(view.name + " ")]) == 1
            assert view.help in out
        assert max(len(line) for line in out.splitlines()) <= 100


def test_colour_on_a_terminal_and_never_with_no_color():
    import pty

    server = _Server(200, json.dumps(S.OVERVIEW).encode())
    try:
        for env, coloured in (({"TERM": "xterm"}, True), ({"TERM": "xterm", "NO_COLOR": "1"}, False)):
            leader, follower = pty.openpty()
            try:
                proc = subprocess.run([sys.executable, "-m", "frisky.cli.main", "observe", "overview", server.url],
                                      stdout=follower, stderr=subprocess.PIPE, timeout=60,
                                      env={k: v for k, v in {**os.environ, **env}.items()
                                           if coloured is False or k != "NO_COLOR"})
                os.close(follower)
                follower = -1
                chunks = []
                while True:
                    try:
                        chunk = os.read(leader, 65536)
                    except OSError:  # the terminal's other end is closed: all read
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
            finally:
                os.close(leader)
                if follower >= 0:
                    os.close(follower)
            assert proc.returncode == 0, proc.stderr
            out = b"".join(chunks).decode()
            assert ("\x1b[" in out) is coloured, out
            assert "→ frisky observe" in out
    finally:
        server.close()
