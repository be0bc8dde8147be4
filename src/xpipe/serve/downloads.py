"""One-time downloads written to disk: the SQL page writes a whole result into a private
temporary folder and the browser fetches it from `/download/<token>`, streamed from the file,
so the server never holds a result in memory (dcc.send_file would base64 it into one JSON
string) and the callback's answer is a link, not the data.

The folder (tempfile.mkdtemp, mode 0700, never beside the warehouse) is made on the first
download and removed when the server stops (close(), and atexit). A file is deleted as its
download starts (opened, then unlinked: the open handle streams it), when its link expires,
when newer downloads push it out of the pending limit, or at shutdown."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import flask

from xpipe.core.errors import UserQueryError

PREFIX = "/download/"
MEDIA_TYPES = {".csv": "text/csv", ".parquet": "application/vnd.apache.parquet",
               ".vot": "application/x-votable+xml", ".fits": "application/fits"}


@dataclass(frozen=True)
class Pending:
    """A written file waiting for its one fetch: its token, where it is, the name the
    browser saves it as, and when (time.monotonic) its link expires."""

    token: str
    path: Path
    filename: str
    expires: float

    @property
    def url(self) -> str:
        return PREFIX + self.token


class DownloadStore:
    """At most `max_pending` files (written or being written), each at most `max_bytes`,
    each link valid for `expiry_s` seconds and for one fetch."""

    def __init__(self, *, max_pending: int = 4, max_bytes: int = 4 * 2**30,
                 expiry_s: float = 600.0) -> None:
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.expiry_s = expiry_s
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}
        self._writing = 0
        self._folder: Path | None = None
        self._closed = False

    @property
    def folder(self) -> Path | None:
        """The private temporary folder, once a download made it (None before)."""
        return self._folder

    def write(self, filename: str, writer: Callable[[Path], None]) -> Pending:
        """`writer(path)` writes the file; it becomes a pending download under a fresh token.
        A failed or too large file is deleted."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            path = self._reserve() / (token + Path(filename).suffix)
        try:
            writer(path)
            size = path.stat().st_size
            if size > self.max_bytes:
                raise UserQueryError(
                    f"the result is {size:,} bytes as {Path(filename).suffix}, more than the "
                    f"server's limit for a download ({self.max_bytes:,} bytes); narrow the "
                    "query, or use `xpipe sql --out` on the warehouse")
        except BaseException:
            path.unlink(missing_ok=True)
            with self._lock:
                self._writing -= 1
            raise
        pending = Pending(token, path, filename, time.monotonic() + self.expiry_s)
        with self._lock:
            self._writing -= 1
            if self._closed:
                path.unlink(missing_ok=True)
                raise UserQueryError("the server is stopping; the download was dropped")
            self._pending[token] = pending
        return pending

    def take(self, token: str) -> Pending | None:
        """The pending download of `token`, removed from the store (a link works once); None
        for an unknown, used or expired token."""
        with self._lock:
            self._drop_expired()
            return self._pending.pop(token, None)

    def close(self) -> None:
        """Delete every pending file and the folder (the server is stopping)."""
        with self._lock:
            self._closed = True
            self._pending.clear()
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)

    def _reserve(self) -> Path:
        """A slot for one more file (under the lock): expired files go first, then the
        oldest pending ones; the folder, made on first use."""
        if self._closed:
            raise UserQueryError("the server is stopping; no download can start")
        self._drop_expired()
        while self._pending and len(self._pending) + self._writing >= self.max_pending:
            self._discard(next(iter(self._pending)))  # insertion order: the oldest
        if self._writing >= self.max_pending:
            raise UserQueryError(f"{self._writing} downloads are being written, the server's "
                                 "limit; try again when one is done")
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="xpipe-serve-downloads-"))
            atexit.register(self.close)
        self._writing += 1
        return self._folder

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for token in [t for t, p in self._pending.items() if p.expires <= now]:
            self._discard(token)

    def _discard(self, token: str) -> None:
        self._pending.pop(token).path.unlink(missing_ok=True)


def send(pending: Pending) -> flask.Response:
    """Stream the file as an attachment; it is unlinked once open (its space is freed when
    the response closes, sent in full or not)."""
    handle = pending.path.open("rb")
    size = os.fstat(handle.fileno()).st_size
    pending.path.unlink()
    response = flask.send_file(
        handle, mimetype=MEDIA_TYPES.get(pending.path.suffix, "application/octet-stream"),
        as_attachment=True, download_name=pending.filename, max_age=0)
    response.content_length = size
    response.headers["Cache-Control"] = "no-store"
    return response
