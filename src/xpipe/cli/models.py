"""`xpipe models`: the frozen model versions in the warehouse, and model files."""

from __future__ import annotations

from pathlib import Path

import click

from xpipe.cli.common import print_frame, settings_from
from xpipe.warehouse.connection import connect


@click.group("models")
def models() -> None:
    """Frozen model versions: one per `xpipe classify` run, or imported from a file."""


@models.command("list")
@click.pass_context
def models_list(ctx: click.Context) -> None:
    """The stored versions, newest first."""
    from xpipe.models import store

    with connect(settings_from(ctx), read_only=True) as con:
        versions = store.list_versions(con)
    if versions.is_empty():
        click.echo("no model versions: run `xpipe classify` or `xpipe models import FILE`")
        return
    print_frame(versions, max_rows=200)


@models.command("show")
@click.argument("version", default="latest")
@click.pass_context
def models_show(ctx: click.Context, version: str) -> None:
    """One version: hash (verified), provenance, selection, scaling, mixture, references."""
    from xpipe.models import frozen, store

    with connect(settings_from(ctx), read_only=True) as con:
        model = store.load(con, version)
    click.echo(frozen.describe(model))


@models.command("export")
@click.argument("version")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_context
def models_export(ctx: click.Context, version: str, file: Path) -> None:
    """Write VERSION to FILE (.npz: model.json and plain arrays; no pickle)."""
    from xpipe.models import file as model_file
    from xpipe.models import store

    with connect(settings_from(ctx), read_only=True) as con:
        model = store.load(con, version)
    model_file.write_file(model, file)
    click.echo(f"wrote model {model.version} (hash {model.content_hash[:12]}) to {file}")


@models.command("import")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.pass_context
def models_import(ctx: click.Context, file: Path) -> None:
    """Add the model in FILE to the warehouse (verified; importing it again changes nothing)."""
    from xpipe.models import file as model_file
    from xpipe.models import store
    from xpipe.warehouse.connection import transaction

    model = model_file.read_file(file)
    settings = settings_from(ctx)
    with connect(settings, create=True) as con, transaction(con):
        added = store.store(con, model, origin="import")
    state = "imported" if added else "already present:"
    click.echo(f"{state} model {model.version} (hash {model.content_hash[:12]}) in "
               f"{settings.warehouse}")
