"""Logging for every component: one setup, two formats, bounded files, bounded floods.

* :func:`setup` configures the root logger of a component process: a file
  ``<state_dir>/log/<component>.log`` rotated by size (``log_max_bytes``,
  ``log_backup_count``), and stderr unless ``log_console`` is off (``netmeta
  up`` turns it off for its children: their logs are the files). The format is
  ``log_format``: ``text`` (one human line) or ``json`` (one object a line,
  for a log shipper).
* Structured fields travel in ``extra={"fields": {...}}``: the JSON format
  puts them in the object, the text format appends them as ``key=value``.
* :class:`RateLimitedLog` is for lines a remote party can cause (an access
  log, a refusal): at most ``burst`` lines per ``interval`` per logger, and
  when more came, one summary line for that interval saying how many were
  left out and of which kind — so a flood costs a line per interval, not a
  disk.

Nothing here is on a hot path unless a caller logs; nothing here raises for
a log file that cannot be written (a warning goes to stderr, and logging
continues there).
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable

from netmeta.model.paths import StatePaths

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
FORMATS = ("text", "json")


class TextFormatter(logging.Formatter):
    """``asctime name LEVEL message key=value ...``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        return line


def _text_value(value: Any) -> str:
    text = "-" if value is None else str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return TextFormatter()


def log_path(state_dir: str, component: str) -> str:
    return StatePaths(state_dir).log_file(component)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotated log that only its owner reads: 0600 from creation, whatever the umask.

    Logs name guests, addresses and callers. ``setup`` runs before a
    component sets its umask, and rotation opens a new file later, so the
    mode is given at each open (and an older, wider file is narrowed).
    """

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
            return open(fd, "a", encoding=self.encoding, errors=self.errors)  # rotation always appends
        except BaseException:
            os.close(fd)
            raise


def setup(
    component: str,
    state_dir: str | None,
    *,
    log_format: str = "text",
    verbose: bool = False,
    console: bool = True,
    max_bytes: int = 10 * 1024 * 1024,
    backup_count: int = 3,
) -> str | None:
    """Configure the root logger for one component; returns the log file, if any."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "netmeta", False):  # ours, from an earlier setup(); others' stay
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    fmt = formatter(log_format)
    path: str | None = None
    if state_dir is not None:
        path = log_path(state_dir, component)
        try:
            # The state directory may not exist yet: made 0700 here as everywhere.
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            file_handler = PrivateRotatingFileHandler(
                path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
            )
        except OSError as exc:
            print(f"netmeta {component}: cannot write {path} ({exc.strerror}); logging to stderr only",
                  file=sys.stderr)
            path, console = None, True
        else:
            file_handler.setFormatter(fmt)
            setattr(file_handler, "netmeta", True)
            root.addHandler(file_handler)
    if console or path is None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        setattr(stream, "netmeta", True)
        root.addHandler(stream)
    # aiohttp's own access logger would duplicate ours, unbounded.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return path


class RateLimitedLog:
    """At most ``burst`` lines per ``interval``; then one summary line per interval.

    ``kind`` groups the left-out lines in the summary ("refused 1234: rate 1200,
    unknown-source 34"). The summary is written by the first call after the
    interval ends, or by :meth:`flush` (call it from a timer so the last
    interval of a flood is reported even when the flood stops).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 20,
        interval: float = 10.0,
        what: str = "lines",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._emitted = 0
        self._dropped: Counter[str] = Counter()
        self.total_dropped = 0

    def log(self, level: int, msg: str, *args: Any, kind: str = "", fields: dict[str, Any] | None = None) -> bool:
        """Log one line unless over the limit; returns whether it was written."""
        if not self.take(level, kind):
            return False
        self.logger.log(level, msg, *args, extra={"fields": fields} if fields else None)
        return True

    def take(self, level: int, kind: str = "") -> bool:
        """Whether a line may be written now (then it counts as written); else it is counted as left out.

        For a caller whose line is costly to build (the access log's fields):
        ``if log.take(INFO, kind): log.logger.info(...)`` builds it only
        when it will be written.
        """
        if not self.logger.isEnabledFor(level):
            return False
        with self._lock:
            summary = self._roll(self._clock())
            allowed = self._emitted < self.burst
            if allowed:
                self._emitted += 1
            else:
                self._dropped[kind or "other"] += 1
                self.total_dropped += 1
        if summary is not None:
            self._write_summary(*summary)
        return allowed

    def info(self, msg: str, *args: Any, **kw: Any) -> bool:
        return self.log(logging.INFO, msg, *args, **kw)

    def warning(self, msg: str, *args: Any, **kw: Any) -> bool:
        return self.log(logging.WARNING, msg, *args, **kw)

    def flush(self) -> None:
        """Write the summary of a finished interval now, if lines were left out."""
        with self._lock:
            summary = self._roll(self._clock())
        if summary is not None:
            self._write_summary(*summary)

    def _roll(self, now: float) -> tuple[float, Counter[str]] | None:
        if now - self._window_start < self.interval:
            return None
        dropped, span = self._dropped, now - self._window_start
        self._window_start, self._emitted, self._dropped = now, 0, Counter()
        return (span, dropped) if dropped else None

    def _write_summary(self, span: float, dropped: Counter[str]) -> None:
        total = sum(dropped.values())
        kinds = ", ".join(f"{kind} {count}" for kind, count in dropped.most_common(5))
        self.logger.warning(
            "%d more %s in the last %.0fs not logged (at most %d per %.0fs): %s",
            total, self.what, span, self.burst, self.interval, kinds,
            extra={"fields": {"suppressed": total, "by_kind": dict(dropped)}},
        )
