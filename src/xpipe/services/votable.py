"""Astropy tables (parsed VOTables: TAP answers and VOTable files) ↔ Arrow, in one place.

Masked cells become nulls and text becomes Arrow strings, so that TAP rows and VOTable file
rows meet the same contract checks as every other input. Uploads go the other way: text as
bytes (VOTable `char`, which every TAP service reads; `unicodeChar` is rarer).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


class VOTableColumnError(ValueError):
    """A column Arrow cannot hold as one value per row (a VOTable array column)."""


def astropy_to_arrow(table: Any) -> pa.Table:
    """Astropy table → Arrow, masked cells as nulls, text as strings."""
    arrays = {}
    for name in table.colnames:
        col = table[name]
        data = np.asarray(col)
        mask = np.broadcast_to(np.asarray(getattr(col, "mask", False), dtype=bool), data.shape)
        if data.dtype.kind in "SUO":
            values = [None if m else (v.decode() if isinstance(v, bytes) else str(v))
                      for v, m in zip(data.tolist(), mask.tolist(), strict=True)]
            arrays[name] = pa.array(values, type=pa.string())
        elif data.ndim > 1:
            raise VOTableColumnError(f"column {name!r} is an array ({data.shape}); "
                                     "expected scalars")
        else:
            arrays[name] = pa.array(data, mask=mask)
    return pa.table(arrays)


def arrow_to_astropy(table: pa.Table) -> Any:
    """Arrow → astropy table for a TAP upload: text as bytes, numbers as numpy arrays."""
    from astropy.table import Table

    columns = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) \
                or pa.types.is_string_view(col.type):
            columns[name] = np.array(col.to_pylist(), dtype="S")
        else:
            columns[name] = col.to_numpy()
    return Table(columns)
