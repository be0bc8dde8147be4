"""The SQL page's download store on its own: limits, expiry, clean-up (no server needed)."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from xpipe.core.errors import UserQueryError
from xpipe.serve.downloads import DownloadStore


def writes(data: bytes):
    return lambda path: path.write_bytes(data)


def test_folder_is_private_and_removed_on_close() -> None:
    store = DownloadStore()
    assert store.folder is None, "no folder until a download is made"
    pending = store.write("xpipe-query.csv", writes(b"a\n1\n"))
    folder = store.folder
    assert folder is not None and pending.path.parent == folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert pending.token not in pending.filename and len(pending.token) >= 40
    store.close()
    assert not folder.exists()
    assert store.take(pending.token) is None
    with pytest.raises(UserQueryError, match="stopping"):
        store.write("xpipe-query.csv", writes(b"x"))


def test_a_link_works_once() -> None:
    store = DownloadStore()
    pending = store.write("xpipe-query.csv", writes(b"a\n1\n"))
    assert store.take(pending.token) == pending
    assert store.take(pending.token) is None
    store.close()


def test_expired_links_are_deleted() -> None:
    store = DownloadStore(expiry_s=0.05)
    pending = store.write("xpipe-query.csv", writes(b"a\n1\n"))
    time.sleep(0.1)
    assert store.take(pending.token) is None
    assert not pending.path.exists()
    store.close()


def test_pending_files_are_bounded_oldest_first() -> None:
    store = DownloadStore(max_pending=2)
    first, second, third = (store.write(f"q{i}.csv", writes(b"x")) for i in range(3))
    assert not first.path.exists() and store.take(first.token) is None
    assert second.path.exists() and third.path.exists()
    assert sorted(p.name for p in store.folder.iterdir()) == sorted(
        p.path.name for p in (second, third))
    store.close()


def test_too_large_or_failed_files_are_deleted() -> None:
    store = DownloadStore(max_bytes=10)
    with pytest.raises(UserQueryError, match=r"20 bytes.*limit for a download \(10 bytes\)"):
        store.write("xpipe-query.csv", writes(b"x" * 20))

    def fails(path: Path) -> None:
        path.write_bytes(b"half")
        raise UserQueryError("the query failed: boom")

    with pytest.raises(UserQueryError, match="boom"):
        store.write("xpipe-query.csv", fails)
    assert list(store.folder.iterdir()) == []
    ok = store.write("xpipe-query.csv", writes(b"x" * 10))  # the failed slots were released
    assert ok.path.read_bytes() == b"x" * 10
    store.close()
