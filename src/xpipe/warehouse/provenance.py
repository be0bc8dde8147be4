"""Provenance: every writing command is a row of meta.runs with its parameters, row counts and
timings, recorded even when the command fails (after its changes were rolled back), with the
process id and host that ran it, so a run whose process was killed is found later
(`run_liveness`). Exported files carry the provenance of the stored classification
(`FileProvenance`, written by `file_formats`)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import duckdb

from xpipe import __version__
from xpipe.warehouse.connection import first_row, table_exists
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


NOT_CLASSIFIED = "none (the warehouse holds no classification)"
NOT_STORED = "none (not recorded in this warehouse)"


@dataclass(frozen=True)
class FileProvenance:
    """What an exported file was made from: written into the file's own metadata, so a file
    found later still says which xpipe, classification and model produced it."""

    xpipe_version: str
    classify_run: str
    classify_finished: str
    model_version: str
    model_hash: str
    query: str | None = None  # the SQL that selected the rows (`xpipe sql --out`, `export`)
    input: str | None = None  # the file the rows were computed from (`xpipe vote`)

    def items(self) -> list[tuple[str, str]]:
        """(field, value) for every field that has a value, in declaration order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None]


def stored_classify_run(con: duckdb.DuckDBPyConnection) -> str | None:
    """The classify run that fitted the stored clustering, or None when nothing is classified."""
    if not table_exists(con, "model.gmm_components"):
        return None
    row = first_row(con, "SELECT any_value(run_id) FROM model.gmm_components")
    return None if row is None or row[0] is None else str(row[0])


def input_provenance(path: str) -> FileProvenance:
    """The provenance of rows computed from a file's classes (`xpipe vote`), not a warehouse's."""
    none = "none (the classes come from the input file)"
    return FileProvenance(__version__, none, none, none, none, input=path)


def file_provenance(con: duckdb.DuckDBPyConnection) -> FileProvenance:
    """The provenance of the classification stored now; an unclassified warehouse says so."""
    run = stored_classify_run(con)
    if run is None:
        return FileProvenance(__version__, NOT_CLASSIFIED, NOT_CLASSIFIED, NOT_CLASSIFIED,
                              NOT_CLASSIFIED)
    finished = version = content_hash = None
    if table_exists(con, "meta.runs"):
        row = first_row(con, "SELECT strftime(finished_at, '%Y-%m-%dT%H:%M:%SZ') "
                             "FROM meta.runs WHERE run_id = ?", [run])
        finished = row[0] if row else None
    if table_exists(con, "model.versions"):
        row = first_row(con, "SELECT version, content_hash FROM model.versions "
                             "WHERE run_id = ? ORDER BY stored_at LIMIT 1", [run])
        version, content_hash = row if row else (None, None)
    return FileProvenance(__version__, run, finished or NOT_STORED, version or NOT_STORED,
                          content_hash or NOT_STORED)
