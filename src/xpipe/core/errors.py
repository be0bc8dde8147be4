"""Errors by cause. The CLI prints an `XpipeError` as one line naming the file, row, column or
table; any other exception is a bug and keeps its traceback."""

from __future__ import annotations


class XpipeError(Exception):
    """A failure the user can act on; its message says what and where."""


class InputError(XpipeError, ValueError):
    """Input does not match its contract, or an argument is out of range (file, row, column)."""


class NotFoundError(InputError):
    """A thing asked for by name (a source, a page) does not exist; `xpipe serve` answers 404."""


class WarehouseError(XpipeError, RuntimeError):
    """The warehouse is missing or lacks the tables a command needs."""


class ModelCheckError(XpipeError, RuntimeError):
    """A model's output broke one of its declared checks, or a fit failed (no convergence)."""


class ServiceError(XpipeError, RuntimeError):
    """A TAP service failed, refused a query, or answered something unusable."""


class ModelFileError(XpipeError, ValueError):
    """A model file is not a valid, unaltered xpipe model, or a model was made for other
    features or classes than this xpipe computes."""


class TooFewRowsError(XpipeError, ValueError):
    """Too few rows for what was asked (cleaned detections for K components, references to
    hold out); the message gives the counts."""


class UserQueryError(XpipeError, ValueError):
    """The user's own query was refused (it would write) or failed."""


class ResourceError(XpipeError, RuntimeError):
    """The machine ran out of something: memory, disk, or a lock another process holds."""


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM: handled exactly like Ctrl-C (a KeyboardInterrupt), so the
    open transaction rolls back and the run is recorded `failed` with this reason."""
