"""A view's output: body lines, then the ``→ frisky observe ...`` lines that name what to
run next. Every line is fitted to 100 columns before it is coloured."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from frisky.observe import text
from frisky.observe.text import Style


@dataclass
class Context:
    """What a view is rendered for: the dashboard URL (repeated in hints when the user gave
    it), colour or not, the view's options and the reply's ``now``."""

    url: str
    explicit_url: bool = False
    style: Style = field(default_factory=lambda: Style(False))
    options: dict[str, Any] = field(default_factory=dict)

    def command(self, view: str, *args: object) -> str:
        words = ["frisky", "observe", view]
        if self.explicit_url:
            words.append(self.url)
        words += [str(a) for a in args]
        return " ".join(shlex.quote(w) for w in words)


class Page:
    """Lines of one view; :meth:`render` adds the hints (at least one) at the end."""

    MAX_HINTS = 3

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.lines: list[str] = []
        self._hints: list[tuple[str, str]] = []

    def add(self, line: str = "", *style: str) -> None:
        self.lines.append(self.ctx.style(text.fit(line), *style))

    def extend(self, lines: list[str], *style: str) -> None:
        for line in lines:
            self.add(line, *style)

    def heading(self, line: str) -> None:
        if self.lines:
            self.lines.append("")
        self.add(line, "bold")

    def hint(self, view: str, *args: object, why: str = "") -> None:
        """Suggest ``frisky observe view args``; the first suggestions made are kept."""
        command = self.ctx.command(view, *args)
        if all(command != c for c, _ in self._hints):
            self._hints.append((command, why))

    def render(self, fallback: tuple[str, str] = ("overview", "the whole cluster at a glance")) -> str:
        hints = self._hints[: self.MAX_HINTS] or [(self.ctx.command(fallback[0]), fallback[1])]
        out = [*self.lines, ""]
        out += [self.ctx.style(text.fit(text.hint(c, why)), "cyan") for c, why in hints]
        return "\n".join(out) + "\n"
