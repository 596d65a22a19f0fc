"""Text helpers every view shares: numbers people read at a glance, sparklines, tables
that fit 100 columns, and colour only on a terminal.

Lines are built plain, fitted to :data:`WIDTH`, then coloured whole, so a line's width is
its ``len`` before colour (every character used here is one column wide).
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence

WIDTH = 100
ELLIPSIS = "…"
ARROW = "→"
_BLOCKS = "▁▂▃▄▅▆▇█"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _num(value: object) -> float:
    """``value`` as a float; ``TypeError`` for what is not a number (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def fmt_bytes(n: object) -> str:
    """``1536`` -> ``"1.5 KiB"``; whole bytes below 1 KiB."""
    value = _num(n)
    if not math.isfinite(value):
        return "?"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1024:
        return f"{sign}{value:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{sign}{value:.1f} {unit}" if value < 100 else f"{sign}{value:.0f} {unit}"
    raise AssertionError("unreachable")


def fmt_size(n: object) -> str:
    """Bytes in at most five columns, for tables: ``"3.0G"``, ``"300M"``, ``"12K"``, ``"512"``."""
    value = _num(n)
    if not math.isfinite(value) or value < 0:
        return "?"
    for unit in ("", "K", "M", "G", "T", "P"):
        if value < 1000 or unit == "P":
            return f"{value:.0f}{unit}" if value >= 10 or not unit else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_seconds(s: object) -> str:
    """A duration: ``"850 µs"``, ``"12 ms"``, ``"3.4 s"``, ``"2m 05s"``, ``"1h 02m"``."""
    value = _num(s)
    if not math.isfinite(value):
        return "?"
    if value < 0:
        return "-" + fmt_seconds(-value)
    if value == 0:
        return "0 s"
    if value < 5e-7:
        return "<1 µs"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        ms = value * 1e3
        return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    if value < 3600:
        m, sec = divmod(int(round(value)), 60)
        return f"{m}m {sec:02d}s"
    h, m = divmod(int(round(value)) // 60, 60)
    return f"{h}h {m:02d}m"


def fmt_count(n: object) -> str:
    """``1234`` -> ``"1,234"``; millions and more as ``"12.3M"``."""
    value = _num(n)
    if not math.isfinite(value):
        return "?"
    if abs(value) >= 1e9:
        return f"{value / 1e9:.1f}G"
    if abs(value) >= 1e7:
        return f"{value / 1e6:.1f}M"
    return f"{value:,.0f}"


def fmt_rate(bytes_per_second: object) -> str:
    return fmt_bytes(bytes_per_second) + "/s"


def fmt_percent(part: object, whole: object) -> str:
    p, w = _num(part), _num(whole)
    return f"{100 * p / w:.0f}%" if w > 0 else "-"


def sparkline(values: Sequence[object], width: int) -> str:
    """``values`` as at most ``width`` block characters, each the mean of the values it covers
    (a short series stretched, each value repeated); blank for zero, the tallest block for
    the largest mean."""
    nums = [_num(v) for v in values]
    if not nums or width < 1:
        return ""
    if len(nums) > width:  # fold evenly: cell i covers [i*n/width, (i+1)*n/width)
        n = len(nums)
        cells = []
        for i in range(width):
            lo, hi = i * n // width, max(i * n // width + 1, (i + 1) * n // width)
            cells.append(sum(nums[lo:hi]) / (hi - lo))
        nums = cells
    elif len(nums) * 2 <= width:  # stretch a short series: each second as wide as it fits
        each = width // len(nums)
        nums = [v for v in nums for _ in range(each)]
    top = max(nums)
    if top <= 0 or not math.isfinite(top):
        return " " * len(nums)
    out = []
    for v in nums:
        if v <= 0 or not math.isfinite(v):
            out.append(" ")
        else:
            out.append(_BLOCKS[min(len(_BLOCKS) - 1, int(v / top * len(_BLOCKS) - 1e-9))])
    return "".join(out)


def active_window(series: Iterable[Sequence[object]], keep: int = 5) -> int:
    """How many leading seconds to drop from aligned series: those before any activity,
    keeping at least the last ``keep`` seconds (a young run fills the sparkline's width)."""
    rows = [[_num(v) for v in s] for s in series]
    length = max((len(r) for r in rows), default=0)
    first = min((next((i for i, v in enumerate(r) if v > 0), length) for r in rows), default=length)
    return max(0, min(first, length - keep))


def bar(fraction: float, width: int) -> str:
    """A horizontal bar ``width`` wide filled to ``fraction`` (clamped to 0..1)."""
    f = 0.0 if not math.isfinite(fraction) else min(1.0, max(0.0, fraction))
    full = int(f * width)
    partial = " ▏▎▍▌▋▊▉"[int((f * width - full) * 8)] if full < width else ""
    return ("█" * full + partial).ljust(width)


def clip(text: object, width: int) -> str:
    """``text`` cut to ``width`` columns, ending in an ellipsis when cut."""
    s = "".join(_safe(ch) for ch in str(text))
    if width <= 0:
        return ""
    return s if len(s) <= width else s[: width - 1] + ELLIPSIS


def clip_left(text: object, width: int) -> str:
    """``text`` cut to ``width`` columns from the left (an address's tail tells it apart)."""
    s = clip(text, 10**9)
    return s if len(s) <= width else ELLIPSIS + s[len(s) - width + 1:]


def _safe(ch: str) -> str:
    """One column for one character: a control character (a hostile key moving the cursor)
    becomes a blank, a double-width one a ``?``."""
    if not ch.isprintable():
        return " "
    if ch > "\u1000" and unicodedata.east_asian_width(ch) in "WF":
        return "?"
    return ch


def fit(line: str) -> str:
    """One output line no wider than :data:`WIDTH`, trailing blanks dropped."""
    return clip(line, WIDTH).rstrip()


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, right: Iterable[int] = (),
          flex: int | Sequence[int] = 0, indent: int = 0) -> list[str]:
    """Rows under headers in aligned columns; columns in ``right`` are right-aligned; the
    ``flex`` columns, in order, give up width (cut with an ellipsis) so a row fits :data:`WIDTH`."""
    cells = [[clip(c, WIDTH) for c in headers]] + [[clip(c, WIDTH) for c in row] for row in rows]
    right = set(right)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for col in [flex] if isinstance(flex, int) else flex:
        over = indent + sum(widths) + 2 * (len(widths) - 1) - WIDTH
        if over <= 0:
            break
        widths[col] = max(len(headers[col]), 4, widths[col] - over)
    out = []
    for row in cells:
        parts = []
        for i, (cell, w) in enumerate(zip(row, widths)):
            cell = clip(cell, w)
            parts.append(cell.rjust(w) if i in right else cell.ljust(w))
        out.append(fit(" " * indent + "  ".join(parts)))
    return out


def plural(n: object, word: str) -> str:
    """``"1 task"``, ``"12 tasks"``, ``"1,234 tasks"``."""
    return f"{fmt_count(n)} {word}{'' if _num(n) == 1 else 's'}"


def fmt_load(seconds_per_second: object) -> str:
    """Seconds per second (how many threads were busy on average): ``"3.9"``, ``"0.05"``."""
    v = _num(seconds_per_second)
    return f"{v:.1f}" if v >= 0.1 or v == 0 else f"{v:.2f}"


def hint(command: str, why: str = "") -> str:
    """A closing ``→ frisky observe ...`` line: the next command, and why to run it."""
    line = f"{ARROW} {command}"
    if why:
        line = f"{line.ljust(44)}  # {why}"
    return line


class Style:
    """ANSI colour when enabled (stdout a terminal, ``NO_COLOR`` unset), else plain text."""

    CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream) -> Style:
        isatty = getattr(stream, "isatty", None)
        tty = bool(isatty and isatty())
        return cls(tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb")

    def __call__(self, text: str, *names: str) -> str:
        names = tuple(n for n in names if n)
        if not self.enabled or not names or not text:
            return text
        codes = ";".join(self.CODES[n] for n in names)
        return f"\x1b[{codes}m{text}\x1b[0m"


def visible(line: str) -> str:
    """``line`` without its colour codes."""
    return _ANSI.sub("", line)
