"""Progress of a long command (``manage.py hacache warm``; the same for any later bulk job).

Three reporters with one interface, ``start(label, total)`` / ``advance(n)`` / ``finish(note)``:
``Bar`` redraws one terminal line (a bar, count, rate and ETA when the total is known; a spinner,
count and rate when not), ``Lines`` prints a plain line at start, every ``interval`` seconds and
at the end (logs, CI, pipes), ``Progress`` itself prints nothing (``--json``). ``for_stream``
picks one for a stream. No dependency; the clock is injectable so tests need not sleep.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any, TextIO

SPINNER = "|/-\\"


def count(n: int) -> str:
    return f"{n:,}"


def duration(seconds: float) -> str:
    """``0:05``, ``12:34``, ``1:02:03``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class Progress:
    """Counts and says nothing: the reporter for ``--json``, and the others' base."""

    def __init__(self, unit: str = "keys", clock: Callable[[], float] = time.monotonic) -> None:
        self.unit = unit
        self.clock = clock
        self.label = ""
        self.total: int | None = None
        self.done = 0
        self.started = 0.0

    def start(self, label: str, total: int | None = None) -> None:
        self.label, self.total, self.done, self.started = label, total, 0, self.clock()

    def advance(self, n: int = 1) -> None:
        self.done += n

    def finish(self, note: str = "") -> None:
        pass

    # -- what the reporters show -----------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None without a total or before any progress."""
        rate = self.rate
        if self.total is None or rate <= 0:
            return None
        return max(0, self.total - self.done) / rate

    def _figures(self) -> str:
        done = count(self.done)
        if self.total is not None:
            done += f"/{count(self.total)}"
        text = f"{done} {self.unit}, {count(round(self.rate))} {self.unit}/s"
        eta = self.eta
        return text + (f", ETA {duration(eta)}" if eta is not None else "")


class Lines(Progress):
    """A plain line at start, at most every ``interval`` seconds, and at the end."""

    def __init__(self, stream: TextIO, interval: float = 5.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stream = _raw(stream)
        self.interval = interval
        self._last = 0.0

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, label: str, total: int | None = None) -> None:
        super().start(label, total)
        self._last = self.started
        size = "" if total is None else f" ({count(total)} {self.unit})"
        self._line(f"{label}: started{size}")

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            percent = f" ({self.done / self.total:.0%})" if self.total else ""
            self._line(f"{self.label}: {self._figures()}{percent}")

    def finish(self, note: str = "") -> None:
        self._line(
            f"{self.label}: done, {count(self.done)} {self.unit} in {self.elapsed:.1f} s "
            f"({count(round(self.rate))} {self.unit}/s)" + (f", {note}" if note else "")
        )


class Bar(Progress):
    """One terminal line redrawn in place, at most every ``redraw`` seconds."""

    WIDTH = 30

    def __init__(self, stream: TextIO, redraw: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stream = _raw(stream)
        self.redraw = redraw
        self._last = 0.0
        self._spin = 0
        self._width = self.WIDTH

    def _draw(self, end: str = "") -> None:
        figures = self._figures()
        columns = shutil.get_terminal_size().columns - 1
        if self.total:
            percent = f"{self.done / self.total:4.0%}"
            width = self._width
            filled = round(width * min(1.0, self.done / self.total))
            gauge = f"[{'#' * filled}{'-' * (width - filled)}] {percent}"
        else:
            self._spin += 1
            gauge = SPINNER[self._spin % len(SPINNER)] if not end else " "
            figures += f", {duration(self.elapsed)}"
        line = f"{self.label} {gauge}  {figures}"
        self.stream.write("\r" + line[: max(10, columns)] + "\x1b[K" + end)
        self.stream.flush()

    def start(self, label: str, total: int | None = None) -> None:
        super().start(label, total)
        self._last = self.started
        if total:  # one width for the whole run, leaving room for the widest figures
            widest = f"{count(total)}/{count(total)} {self.unit}, 99,999 {self.unit}/s, ETA 9:59"
            room = shutil.get_terminal_size().columns - len(label) - len(widest) - 12
            self._width = max(10, min(self.WIDTH, room))
        self._draw()

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        now = self.clock()
        if now - self._last >= self.redraw:
            self._last = now
            self._draw()

    def finish(self, note: str = "") -> None:
        self._draw(end=(f"  {note}" if note else "") + "\n")


def for_stream(stream: TextIO, *, quiet: bool = False, **kwargs: Any) -> Progress:
    """Nothing if ``quiet``, a ``Bar`` on a terminal, ``Lines`` otherwise."""
    if quiet:
        return Progress(**kwargs)
    isatty = getattr(_raw(stream), "isatty", None)
    return Bar(stream, **kwargs) if isatty is not None and isatty() else Lines(stream, **kwargs)


def _raw(stream: Any) -> Any:
    """The real stream under Django's ``OutputWrapper`` (which would add a newline per write)."""
    return getattr(stream, "_out", stream)
