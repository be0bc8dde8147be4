"""Progress display for long steps: rows done, rate and ETA (tqdm), on stderr."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bar(desc: str, total: int | None, unit: str = "rows") -> Iterator[tqdm]:
    """A bar whose `update(n)` adds n rows; XPIPE_PROGRESS=0 silences it (e.g. in tests)."""
    disable = os.environ.get("XPIPE_PROGRESS", "1") == "0"
    bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, mininterval=1.0,
               dynamic_ncols=True, disable=disable, leave=True)
    try:
        yield bar
    finally:
        bar.close()
