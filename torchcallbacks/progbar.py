"""The Keras progress bar: tf.keras 2 look by default, Keras 3 look with ``style="keras3"``.

On a terminal (or in Jupyter) the bar redraws in place, at most every ``interval`` seconds.
Elsewhere (a pipe, a log file) it writes no control characters at all: a plain progress line
at most every ``plain_interval`` seconds and the final line of each epoch.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


def _format_time(seconds: float, unit: str) -> str:
    if seconds >= 1 or seconds == 0:
        return f" {seconds:.0f}s/{unit}"
    if seconds >= 1e-3:
        return f" {seconds * 1e3:.0f}ms/{unit}"
    return f" {seconds * 1e6:.0f}us/{unit}"


def _format_eta(eta: float) -> str:
    if eta > 3600:
        return f"{int(eta // 3600)}:{int((eta % 3600) // 60):02d}:{int(eta % 60):02d}"
    if eta > 60:
        return f"{int(eta // 60)}:{int(eta % 60):02d}"
    return f"{int(eta)}s"


def is_interactive(stream: TextIO) -> bool:
    """True on a terminal or in a Jupyter kernel (Keras also tests ``posix``; we do not,
    so redirected output stays free of ``\\b``/``\\r``)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


class Progbar:
    """A progress bar over ``target`` steps (``None``: unknown until the end).

    ``verbose=1`` draws the bar; ``verbose=2`` prints one line when finalized. Values named
    in ``averaged`` are averaged over steps; the others (running means already) are shown
    as they are.
    """

    def __init__(
        self,
        target: int | None,
        verbose: int = 1,
        style: str = "keras2",
        unit_name: str = "step",
        averaged: set[str] | None = None,
        stream: TextIO | None = None,
        interval: float = 0.05,
        plain_interval: float = 10.0,
    ) -> None:
        self.target = target
        self.verbose = verbose
        self.style = style
        self.width = 20 if style == "keras3" else 30
        self.unit_name = unit_name
        self.averaged = averaged or set()
        self.stream = stream or sys.stdout
        self.dynamic = is_interactive(self.stream)
        self.interval = interval if self.dynamic else plain_interval
        self._values: dict[str, Any] = {}
        self._sums: dict[str, list[float]] = {}
        self._start = time.time()
        # Off a terminal the first plain line waits a full interval: short epochs print
        # only their final line.
        self._last_update = 0.0 if self.dynamic else self._start
        self._time_after_first_step: float | None = None
        self._previous_width = 0
        self._seen_so_far = 0
        self._initial = 0  # where the bar started: > 0 for an epoch resumed mid-way

    def resume_at(self, current: int) -> None:
        """Start the bar at ``current`` (an epoch resumed after ``current`` steps or samples):
        drawn there at once on a terminal (``verbose=1``); times and ETAs count only the
        steps run from there."""
        self._initial = self._seen_so_far = current
        if self.verbose == 1 and self.dynamic:
            self._last_update = time.time()
            self._write(self._counter(current) + self._bar(current), finalize=False)

    def due(self) -> bool:
        """Whether the next non-final update would draw (verbose=1 redraws are throttled)."""
        return self.verbose == 1 and time.time() - self._last_update >= self.interval

    def update(
        self, current: int, values: dict[str, Any] | None = None, finalize: bool | None = None
    ) -> None:
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        for key, value in (values or {}).items():
            if key in self.averaged and isinstance(value, int | float):
                total, steps = self._sums.get(key, [0.0, 0])
                delta = max(current - self._seen_so_far, 1)
                self._sums[key] = [total + value * delta, steps + delta]
                self._values[key] = self._sums[key][0] / self._sums[key][1]
            else:
                self._values[key] = value
        self._seen_so_far = current
        now = time.time()
        if current == self._initial + 1 and self._time_after_first_step is None:
            self._time_after_first_step = now
        if self.verbose == 1:
            if not finalize and now - self._last_update < self.interval:
                return
            self._last_update = now
            self._write(self._line(current, now, finalize), finalize)
        elif self.verbose == 2 and finalize:
            self.stream.write(self._summary_line(current, now) + "\n")
            self.stream.flush()

    def _time_per_step(self, current: int, now: float) -> float:
        done = current - self._initial  # this run's steps (all but the skipped ones)
        if done <= 0:
            return 0.0
        if done > 1 and self._time_after_first_step is not None:
            return (now - self._time_after_first_step) / (done - 1)
        return (now - self._start) / done

    def _counter(self, current: int) -> str:
        if self.target is None:
            return f"{current:7d}/Unknown"
        digits = int(math.log10(self.target)) + 1 if self.target > 0 else 1
        return f"{current:{digits}d}/{self.target}"

    def _metrics(self, signed: bool = True) -> str:
        parts = []
        for key, value in self._values.items():
            if isinstance(value, int | float):
                big = abs(value) > 1e-3 if signed else value > 1e-3
                parts.append(f" - {key}: {value:.4f}" if big else f" - {key}: {value:.4e}")
            else:
                parts.append(f" - {key}: {value}")
        return "".join(parts)

    def _bar(self, current: int) -> str:
        if self.target is None:
            return ""
        done = int(self.width * min(current / self.target, 1.0)) if self.target else self.width
        if self.style == "keras3":
            if self.dynamic:
                return f" \x1b[32m{'━' * done}\x1b[0m\x1b[37m{'━' * (self.width - done)}\x1b[0m"
            return " " + "━" * self.width
        bar = ""
        if done > 0:
            bar = "=" * (done - 1) + (">" if current < self.target else "=")
        return f" [{bar}{'.' * (self.width - done)}]"

    def _line(self, current: int, now: float, finalize: bool) -> str:
        per_step = self._time_per_step(current, now)
        unknown_or_done = self.target is None or finalize or current >= self.target
        if self.style == "keras3":
            if unknown_or_done:
                when = f" {now - self._start:.0f}s"
            else:
                when = f" {_format_eta(per_step * (self.target - current))}"
            if self.dynamic:
                when = f" \x1b[1m{when.strip()}\x1b[0m"
            counter = self._counter(current)
            if self.dynamic:
                counter = f"\x1b[1m{counter}\x1b[0m"
            return (
                counter
                + self._bar(current)
                + when
                + _format_time(per_step, self.unit_name)
                + self._metrics()
            )
        line = self._counter(current) + self._bar(current)
        if unknown_or_done:
            line += f" - {now - self._start:.0f}s" + _format_time(per_step, self.unit_name)
        else:
            line += f" - ETA: {_format_eta(per_step * (self.target - current))}"
        return line + self._metrics()

    def _summary_line(self, current: int, now: float) -> str:
        elapsed = now - self._start
        per_step = self._time_per_step(current, now)
        count = self._counter(current)
        if self.style == "keras3":
            return (
                f"{count} - {elapsed:.0f}s -{_format_time(per_step, self.unit_name)}"
                + self._metrics(signed=False)
            )
        return (
            f"{count} - {elapsed:.0f}s{self._metrics(signed=False)} -"
            f"{_format_time(elapsed, 'epoch')} -{_format_time(per_step, self.unit_name)}"
        )

    def _write(self, line: str, finalize: bool) -> None:
        if self.dynamic:
            padding = " " * max(self._previous_width - len(line), 0)
            self.stream.write("\b" * self._previous_width + "\r" + line + padding)
            self._previous_width = len(line)
            if finalize:
                self.stream.write("\n")
                self._previous_width = 0
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
