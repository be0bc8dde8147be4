"""Provenance: every writing command is a row of meta.runs with its parameters, row counts and
timings, recorded even when the command fails (after its changes were rolled back), with the
process id and host that ran it, so a run whose process was killed is found later
(`run_liveness`)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import duckdb

from xpipe import __version__
from xpipe.warehouse.run_liveness import this_process
from xpipe.warehouse.sql_models import dump_json

log = logging.getLogger("xpipe")


class RunRecorder:
    """Collects per-stage row counts and timings for one command."""

    def __init__(self, con: duckdb.DuckDBPyConnection, command: str, params: dict) -> None:
        self.con = con
        self.command = command
        self.params = params
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self.row_counts: dict[str, int] = {}
        self.timings: dict[str, float] = {}

    def start(self) -> RunRecorder:
        pid, host = this_process()
        self.con.execute(
            "INSERT INTO meta.runs (run_id, command, status, started_at, xpipe_version, params, "
            "pid, host) VALUES (?, ?, 'running', now(), ?, ?, ?, ?)",
            [self.run_id, self.command, __version__, dump_json(self.params), pid, host],
        )
        return self

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("%s: %s …", self.command, name.replace("_", " "))
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)
            log.info("%s: %s done in %.1f s", self.command, name.replace("_", " "),
                     self.timings[name])

    def count(self, name: str, rows: int) -> None:
        self.row_counts[name] = int(rows)

    def finish(self, status: str, error: str | None = None) -> None:
        self.con.execute(
            "UPDATE meta.runs SET status = ?, finished_at = now(), row_counts = ?, timings = ?, "
            "error = ? WHERE run_id = ?",
            [status, dump_json(self.row_counts), dump_json(self.timings), error, self.run_id],
        )


@contextmanager
def recorded_run(con: duckdb.DuckDBPyConnection, command: str, params: dict
                 ) -> Iterator[RunRecorder]:
    """Record the run around a block; the block's own transaction decides what is kept."""
    recorder = RunRecorder(con, command, params).start()
    try:
        yield recorder
    except BaseException as exc:
        recorder.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    recorder.finish("ok")
