"""Runs whose process is gone: a command killed with SIGKILL (or a machine that lost power)
cannot record its own end, so its meta.runs row would say `running` for ever.

Each run records its process id and host (`meta.runs.pid`, `host`). A run still `running` whose
host is this one and whose process no longer exists (`os.kill(pid, 0)`) was interrupted: a
writing command marks it so when it opens the warehouse, a read-only one only reports it. A run
from another host is left alone (its process cannot be checked from here).
"""

from __future__ import annotations

import logging
import os
import socket

import duckdb

from xpipe.warehouse.contracts import relation_columns

log = logging.getLogger("xpipe")

STATUS = "interrupted"


def this_process() -> tuple[int, str]:
    """(pid, host) of the running command, as meta.runs records them."""
    return os.getpid(), socket.gethostname()


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: never mark a run that may still be going
    return True


def interrupted_runs(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, object, int, str]]:
    """(run_id, command, started_at, pid, host) of the runs left `running` by a process of this
    host that is gone; none in a warehouse whose meta.runs predates the pid column."""
    columns = {name for name, _type in relation_columns(con, "meta.runs")}
    if not {"pid", "host"} <= columns:
        return []
    _, host = this_process()
    rows = con.execute("SELECT run_id, command, started_at, pid, host FROM meta.runs WHERE "
                       "status = 'running' AND host = ? AND pid IS NOT NULL ORDER BY started_at",
                       [host]).fetchall()
    return [row for row in rows if not process_alive(int(row[3]))]


def _reason(pid: int, host: str) -> str:
    return (f"interrupted: process {pid} on {host} ended without recording the end of the run "
            "(killed, e.g. SIGKILL or out of memory); its changes were not committed")


def mark_interrupted(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Mark this host's runs whose process is gone `interrupted`; returns their ids."""
    stale = interrupted_runs(con)
    for run_id, command, _started, pid, host in stale:
        con.execute("UPDATE meta.runs SET status = ?, finished_at = now(), error = ? "
                    "WHERE run_id = ? AND status = 'running'",
                    [STATUS, _reason(pid, host), run_id])
        log.warning("run %s (%s) was interrupted: process %s is gone; marked %s in meta.runs",
                    run_id, command, pid, STATUS)
    return [row[0] for row in stale]


def report_interrupted(con: duckdb.DuckDBPyConnection, path: object) -> list[str]:
    """Warn about this host's runs whose process is gone, without writing (read-only)."""
    stale = interrupted_runs(con)
    for run_id, command, _started, pid, _host in stale:
        log.warning("run %s (%s) in %s was interrupted: meta.runs says running, but process %s "
                    "is gone (the next writing command marks it %s)", run_id, command, path,
                    pid, STATUS)
    return [row[0] for row in stale]
