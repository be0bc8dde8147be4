"""`xpipe serve`: the explorer of a classified warehouse in a browser (xpipe.serve)."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import click

from xpipe.cli.common import settings_from
from xpipe.core.errors import ResourceError


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, listening (werkzeug serves on a duplicate of it); a port
    in use or an address not on this machine is a one-line error."""
    from werkzeug.serving import select_address_family

    try:
        return socket.create_server((host, port), family=select_address_family(host, port))
    except OSError as exc:
        raise ResourceError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): "
                            "choose another --port or --host") from exc


@click.command()
@click.option("--warehouse", "warehouse", type=click.Path(path_type=Path), default=None,
              help="DuckDB warehouse file [default: the group's --warehouse or XPIPE_WAREHOUSE].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback: only this machine).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--allow-sql/--no-sql", "allow_sql", default=None,
              help="The SQL page [default: on for a loopback host, off otherwise, since a "
                   "query can read the server's local files].")
@click.pass_context
def serve(ctx: click.Context, *, warehouse: Path | None, host: str, port: int,
          allow_sql: bool | None) -> None:
    """Explore the classified catalogue in a browser (read-only; Ctrl-C stops it)."""
    from werkzeug.serving import make_server

    from xpipe.serve.app import create_app
    from xpipe.serve.settings import ServeSettings, is_loopback

    if warehouse is not None:  # errors (a lock held elsewhere) then name this file
        ctx.obj["settings"] = replace(settings_from(ctx), warehouse=warehouse)
    path = settings_from(ctx).warehouse
    settings = ServeSettings(host=host, port=port,
                             allow_sql=is_loopback(host) if allow_sql is None else allow_sql)
    app = create_app(path, settings)
    reader = app.server.extensions["xpipe_reader"]
    try:
        with listening_socket(host, port) as sock:
            server = make_server(host, port, app.server, threaded=True, fd=sock.fileno())
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"xpipe serve: http://{shown}:{server.port}/ — {path}, read-only; "
                   f"SQL page {'on' if settings.allow_sql else 'off'}. Ctrl-C stops it.",
                   err=False)
        try:
            server.serve_forever()  # returns on Ctrl-C (and SIGTERM: handled like it)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        click.echo("stopped")
    finally:
        app.server.extensions["xpipe_downloads"].close()
        reader.close()
