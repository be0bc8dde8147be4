"""What the command modules share: the invocation's settings, counts and tables as text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from xpipe.core.config import Settings


def settings_from(ctx: click.Context) -> Settings:
    """The settings of this invocation (the group's --warehouse over XPIPE_* variables)."""
    settings: Settings = ctx.obj["settings"]
    return settings


def counts_text(counts: Mapping[str, int]) -> str:
    """`detections 60,000, sources 22,514`."""
    return ", ".join(f"{key} {value:,}" for key, value in counts.items())


def print_frame(frame: Any, max_rows: int = 40) -> None:
    """A Polars frame as a table: every column, no shape or dtype lines."""
    import polars as pl

    with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=1000,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        click.echo(frame)
