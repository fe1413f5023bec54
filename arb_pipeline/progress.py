"""A one-line progress bar on stderr for long ``arb`` commands; no dependencies.

Shown only when the stream is a terminal, so scripts and logs get clean output;
``ARB_PROGRESS=1`` forces it (e.g. under ``script`` or a CI log viewer), ``ARB_PROGRESS=0``
hides it. Core functions take a ``Progress`` and never check the terminal themselves.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Iterable, Iterator, TextIO, TypeVar

from arb_pipeline.settings import PROGRESS

T = TypeVar("T")
REDRAW_SECONDS = 0.1  # at most ten redraws a second: a fast loop must not be slowed by its bar
BAR_WIDTH = 24


def progress_wanted(stream: TextIO) -> bool:
    forced = PROGRESS.read()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class Progress:
    """One bar at a time: ``start(label, total)``, ``advance(note)``, ``finish()``."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = progress_wanted(self.stream) if enabled is None else enabled
        self.label, self.total, self.done = "", 0, 0
        self._note, self._drawn_at, self._active = "", 0.0, False

    def start(self, label: str, total: int) -> None:
        if self._active:
            self.finish()
        self.label, self.total, self.done, self._note = label, max(int(total), 0), 0, ""
        self._active = True
        self._draw(force=True)

    def advance(self, note: str = "", n: int = 1) -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        self._note = note
        self._draw(force=self.done >= self.total)

    def note(self, text: str) -> None:
        """Say what the current step is doing without counting it done."""
        self._note = text
        self._draw()

    def finish(self) -> None:
        if self._active and self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
        self._active = False

    def track(
        self, items: Iterable[T], label: str, total: int | None = None, describe=lambda item: str(item)
    ) -> Iterator[T]:
        """Yield ``items`` with the bar advancing after each (it shows the item being worked on)."""
        items = list(items) if total is None else items
        self.start(label, len(items) if total is None else total)
        try:
            for item in items:
                self.note(describe(item))
                yield item
                self.advance(describe(item))
        finally:
            self.finish()

    def line(self) -> str:
        """The bar's text (what ``_draw`` writes), for tests and for the final state."""
        if self.total:
            filled = BAR_WIDTH * self.done // self.total
            bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total}"
        else:
            bar = f"{self.done}"
        text = f"{self.label} {bar}" + (f" {self._note}" if self._note else "")
        width = shutil.get_terminal_size((100, 20)).columns - 1
        return text if len(text) <= width else text[: max(width - 1, 0)] + "…"

    def _draw(self, force: bool = False) -> None:
        if not (self.enabled and self._active):
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = now
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r" + self.line().ljust(width))
        self.stream.flush()


def silent() -> Progress:
    return Progress(enabled=False)
