"""The shared logging: formats, size rotation, and floods bounded to a line per interval."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

import pytest

from netmeta import logs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("netmeta.test.flood")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield records
    logger.removeHandler(handler)


def test_a_flood_costs_a_burst_and_one_summary_per_interval(captured: list[logging.LogRecord]) -> None:
    clock = Clock()
    limited = logs.RateLimitedLog(logging.getLogger("netmeta.test.flood"), burst=5, interval=10.0,
                                  what="refusals", clock=clock)
    for i in range(1000):
        limited.warning("refused %d", i, kind="rate" if i % 4 else "unknown-source")
    assert [r.getMessage() for r in captured] == [f"refused {i}" for i in range(5)]
    clock.now += 10.0
    limited.flush()
    summary = captured[-1]
    assert summary.getMessage().startswith("995 more refusals in the last 10s not logged (at most 5 per 10s)")
    fields = getattr(summary, "fields")
    assert fields["suppressed"] == 995 and sum(fields["by_kind"].values()) == 995
    assert fields["by_kind"]["unknown-source"] == 250 - 2  # i = 0 and 4 were among the five written
    # a new interval: a new burst; a quiet interval writes no summary
    assert limited.warning("again")
    count = len(captured)
    clock.now += 30.0
    limited.flush()
    assert len(captured) == count
    assert limited.total_dropped == 995


def test_json_format_is_one_object_a_line_with_the_fields() -> None:
    record = logging.LogRecord("netmeta.metadata.access", logging.INFO, __file__, 1, "GET %s", ("/x",), None)
    record.fields = {"status": 200, "peer": "10.0.0.5"}
    out = json.loads(logs.JsonFormatter().format(record))
    assert out["message"] == "GET /x" and out["level"] == "info" and out["logger"] == "netmeta.metadata.access"
    assert out["status"] == 200 and out["peer"] == "10.0.0.5" and out["time"].endswith("Z")
    text = logs.TextFormatter().format(record)
    assert text.endswith("GET /x status=200 peer=10.0.0.5")


@pytest.fixture
def root_logger() -> Iterator[None]:
    """logs.setup() replaces the root logger's handlers: give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_the_file_rotates_by_size(tmp_path: Path, root_logger: None) -> None:
    path = logs.setup("agent", str(tmp_path), console=False, max_bytes=4096, backup_count=2)
    assert path == str(tmp_path / "log" / "agent.log")
    log = logging.getLogger("netmeta.test.rotate")
    for i in range(500):
        log.info("line %d with some padding to fill the file quickly", i)
    names = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert names == ["agent.log", "agent.log.1", "agent.log.2"]
    assert all(p.stat().st_size <= 4096 + 200 for p in (tmp_path / "log").iterdir())


def test_an_unwritable_log_directory_falls_back_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root_logger: None
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    assert logs.setup("server", str(blocker), console=False) is None
    assert "logging to stderr only" in capsys.readouterr().err
