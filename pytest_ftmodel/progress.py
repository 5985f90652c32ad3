"""Progress of long work (generation, scoring, sandbox runs): done/total, rate, time left.

Nothing is shown for work that ends within :data:`DELAY` seconds. After that, on a terminal the line
is redrawn in place (at most a few times a second); elsewhere (CI logs, files) a new line is written
each time another tenth of the work is done. Inside pytest the plugin routes the lines to pytest's
terminal, with output capture suspended for the moment of writing, so tests' captured output stays
theirs; pytest-xdist workers stay silent (their output never reaches the terminal). Outside pytest
the lines go to stderr.

Call sites stay one line each::

    with progress("generating answers", total=len(jobs)) as bar:
        for chunk in chunks:
            ...
            bar.advance(len(chunk))
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Iterable, Iterator, Protocol, TypeVar

from pytest_ftmodel._stack import SessionStack

T = TypeVar("T")

#: seconds of work before anything is shown
DELAY = 3.0
#: seconds between redraws on a terminal
REDRAW = 0.25


class Sink(Protocol):
    """Where progress lines go."""

    def isatty(self) -> bool: ...

    def line(self, text: str) -> None:
        """Write ``text`` as a line of its own."""

    def redraw(self, text: str, final: bool) -> None:
        """Replace the current line by ``text``; ``final`` ends it."""


class StreamSink:
    """Lines to a text stream (stderr outside pytest)."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream
        self._width = 0

    @property
    def stream(self) -> Any:
        return self._stream if self._stream is not None else sys.stderr

    def isatty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def redraw(self, text: str, final: bool) -> None:
        self.stream.write("\r" + text.ljust(self._width) + ("\n" if final else ""))
        self.stream.flush()
        self._width = 0 if final else len(text)


class PytestSink:
    """Lines to pytest's terminal, written with capture suspended (as live logging does)."""

    def __init__(self, config: Any) -> None:
        self._config = config
        self._width = 0
        self._started = False

    def _parts(self) -> tuple[Any, Any]:
        pm = self._config.pluginmanager
        return pm.get_plugin("terminalreporter"), pm.get_plugin("capturemanager")

    def isatty(self) -> bool:
        reporter, _ = self._parts()
        return bool(reporter is not None and getattr(reporter, "isatty", False))

    def _write(self, action: Any) -> None:
        reporter, capman = self._parts()
        if reporter is None:
            return
        if capman is not None:
            with capman.global_and_fixture_disabled():
                action(reporter)
        else:
            action(reporter)

    def line(self, text: str) -> None:
        def write(reporter: Any) -> None:
            reporter.ensure_newline()
            if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
                reporter.write("\n")  # after -q's dots, which leave no file name to end the line
            reporter.write_line(text)

        self._write(write)

    def redraw(self, text: str, final: bool) -> None:
        def write(reporter: Any) -> None:
            if not self._started:
                reporter.ensure_newline()
                if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
                    reporter.write("\n")
                self._started = True
            reporter.write("\r" + text.ljust(self._width), flush=True)
            if final:
                reporter.write("\n", flush=True)  # pytest's idea of the current line starts afresh

        self._write(write)
        self._width = 0 if final else len(text)
        if final:
            self._started = False


class Silent:
    def isatty(self) -> bool:
        return False

    def line(self, text: str) -> None:
        pass

    def redraw(self, text: str, final: bool) -> None:
        pass


_sinks: SessionStack[Sink] = SessionStack(StreamSink())


def push_sink(sink: Sink) -> Sink:
    return _sinks.push(sink)


def pop_sink(sink: Sink) -> None:
    if _sinks.current() is sink:
        _sinks.pop()


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Counts done work and shows it once it has taken longer than :data:`DELAY`."""

    def __init__(self, what: str, total: int, *, unit: str = "", sink: Sink | None = None) -> None:
        self.what = what
        self.total = max(0, int(total))
        self.unit = unit
        self.done = 0
        self._sink = sink if sink is not None else _sinks.current()
        self._start = time.monotonic()
        self._shown = False
        self._tty = False
        self._last_draw = 0.0
        self._next_tenth = 1
        self._lock = threading.Lock()

    def text(self, final: bool = False) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        unit = f" {self.unit}" if self.unit else ""
        share = f" ({100 * self.done // self.total}%)" if self.total else ""
        head = f"ftmodel: {self.what} {self.done}/{self.total}{unit}{share}"
        if final:
            return f"{head} in {_duration(elapsed)}, {rate:.3g}/s"
        left = f", ~{_duration((self.total - self.done) / rate)} left" if rate > 0 and self.total else ""
        return f"{head}, {rate:.3g}/s{left}"

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done = min(self.total, self.done + n) if self.total else self.done + n
            now = time.monotonic()
            if not self._shown:
                if now - self._start < DELAY or self.done >= self.total:
                    return
                self._shown = True
                self._tty = self._sink.isatty()
                self._last_draw = now
                self._next_tenth = self.done * 10 // self.total + 1 if self.total else 1
                self._show()
                return
            if self.done >= self.total:
                return  # close() writes the final line
            if self._tty:
                if now - self._last_draw >= REDRAW:
                    self._last_draw = now
                    self._show()
            elif self.total and self.done * 10 // self.total >= self._next_tenth:
                self._next_tenth = self.done * 10 // self.total + 1
                self._show()

    def track(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield from ``iterable``, counting one unit per item."""
        for value in iterable:
            self.advance()
            yield value

    def _show(self, final: bool = False) -> None:
        text = self.text(final)
        try:
            if self._tty:
                self._sink.redraw(text, final)
            else:
                self._sink.line(text)
        except Exception:  # noqa: BLE001 - progress never fails the work it describes
            pass

    def close(self) -> None:
        with self._lock:
            if self._shown:
                self._show(final=True)
                self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(what: str, total: int, *, unit: str = "") -> Progress:
    """A :class:`Progress` for ``total`` units of work, shown where the running session shows it."""
    return Progress(what, total, unit=unit)
