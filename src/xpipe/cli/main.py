"""The `xpipe` command line: the group, its settings, and how failures are shown.

The commands live in the modules of this package by subject. A failure the user can act on
(an `XpipeError`) prints as one `Error: …` line; DuckDB running out of memory or disk, or
finding the warehouse locked by another process, becomes a `ResourceError` with a hint; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
import duckdb

from xpipe.cli.classify import anomalies, classify, classify_new, export, summary, vote
from xpipe.cli.load import crossmatch, simulate, warehouse
from xpipe.cli.models import models
from xpipe.cli.query import dag, sql
from xpipe.cli.science import bic, explain, report, stability, uncertainty, validate
from xpipe.cli.serve import serve
from xpipe.core.config import Settings
from xpipe.core.errors import ResourceError, Terminated, XpipeError

DISK_FULL = ("No space left on device", "disk is full", "Disk full")
LOCKED = "Could not set lock on file"


def resource_error(exc: BaseException, settings: Settings | None) -> ResourceError | None:
    """The machine, not the input, failed: DuckDB out of memory or disk, or the warehouse
    locked by another process, found in `exc` or what caused it (`connect` raises a
    WarehouseError from DuckDB's lock error). None for any other failure."""
    cause: BaseException | None = exc
    if settings is None:  # the settings themselves were refused: nothing to hint with
        return None
    while cause is not None and not isinstance(cause, duckdb.Error):
        cause = cause.__cause__
    full = str(cause)
    text = full.strip().split("\n")[0]  # DuckDB's own advice (SET ...) follows
    if isinstance(cause, duckdb.OutOfMemoryException):
        return ResourceError(f"{text}: raise XPIPE_MEMORY_LIMIT (now {settings.memory_limit}) "
                             "or set XPIPE_TEMP_DIR to a disk with room for DuckDB to spill to")
    if isinstance(cause, duckdb.IOException) and LOCKED in full:
        return ResourceError(f"the warehouse {settings.warehouse} is open in another process, "
                             f"e.g. `xpipe serve` ({text}): stop it first (or wait for the "
                             "command using it to finish), or use another --warehouse")
    if isinstance(cause, duckdb.IOException) and any(s in full for s in DISK_FULL):
        return ResourceError(f"{text}: the disk is full; free space, or set XPIPE_TEMP_DIR "
                             f"(now {settings.resolved_temp_directory()}) to a disk with room")
    return None


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(f"stopped by {signal.Signals(signum).name}")


def handle_sigterm(ctx: click.Context) -> None:
    """SIGTERM behaves like Ctrl-C for this invocation: the transaction rolls back and the run
    is recorded `failed`; the previous handler is restored when the command ends."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    previous = signal.signal(signal.SIGTERM, _terminate)
    ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


class XpipeGroup(click.Group):
    """The top-level group: a user's failure is one `Error: …` line, a bug a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own: usage errors, --help, Ctrl-C
        except Terminated as exc:
            click.echo(f"Error: {exc}: changes rolled back", err=True)
            raise click.exceptions.Exit(128 + signal.SIGTERM) from exc
        except Exception as exc:
            if interrupted(exc):
                raise click.Abort from exc  # Ctrl-C inside a DuckDB query: as anywhere else
            error = one_line_error(exc, ctx.obj["settings"] if ctx.obj else None)
            if error is None:
                raise
            raise click.ClickException(str(error)) from exc


def interrupted(exc: Exception) -> bool:
    """Ctrl-C that arrived while DuckDB ran a query: DuckDB cancels the query and raises
    (RuntimeError 'Query interrupted' from its SIGINT handler) instead of KeyboardInterrupt."""
    return isinstance(exc, duckdb.InterruptException) or (
        type(exc) is RuntimeError and str(exc) == "Query interrupted")


def one_line_error(exc: Exception, settings: Settings | None) -> Exception | None:
    """What to show as `Error: …` for `exc`, or None to keep its traceback."""
    resource = resource_error(exc, settings)
    if resource is not None:
        return resource
    if isinstance(exc, XpipeError):
        return exc
    return None


@click.group(cls=XpipeGroup)
@click.option("--warehouse", "warehouse", type=click.Path(path_type=Path), default=None,
              help="DuckDB warehouse file [env XPIPE_WAREHOUSE; default warehouse/xpipe.duckdb].")
@click.version_option(package_name="xpipe")
@click.pass_context
def main(ctx: click.Context, warehouse: Path | None) -> None:
    """Probabilistic classes for every detection and source of an X-ray catalogue
    (Pérez-Díaz et al. 2024), at catalogue scale."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    handle_sigterm(ctx)
    settings = Settings() if warehouse is None else Settings(warehouse=warehouse)
    ctx.obj = {"settings": settings}


for _command in (simulate, warehouse, crossmatch, classify, summary, vote, export, sql, bic,
                 validate, stability, uncertainty, report, explain, dag, models, classify_new,
                 anomalies, serve):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
