"""`xpipe serve` as a user runs it: prints the URL, serves read-only, holds the file so that
`xpipe classify` says who has it, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from science_fixtures import classified_copy


@pytest.fixture
def own_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return classified_copy(tmp_path_factory, "serve-cli")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_serve_holds_the_file_and_stops_on_ctrl_c(own_warehouse: Path, cli) -> None:
    before = digest(own_warehouse)
    server = subprocess.Popen(
        [sys.executable, "-m", "xpipe.cli", "--warehouse", str(own_warehouse), "serve",
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("xpipe serve: http://127.0.0.1:"), line
        url = line.split()[2]
        assert "SQL page on" in line  # loopback: on by default
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
        classify = cli("--warehouse", str(own_warehouse), "classify", expect_ok=False)
        assert classify.exit_code == 1
        assert (f"Error: the warehouse {own_warehouse} is open in another process, e.g. "
                "`xpipe serve`") in classify.output
        assert "stop it first" in classify.output
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
    assert digest(own_warehouse) == before
    assert cli("--warehouse", str(own_warehouse), "summary").exit_code == 0  # lock released


def test_serve_refuses_what_it_cannot_serve(tmp_path: Path, loaded: Path, cli) -> None:
    missing = cli("serve", "--warehouse", str(tmp_path / "none.duckdb"), expect_ok=False)
    assert missing.exit_code == 1 and "no warehouse at" in missing.output
    assert not (tmp_path / "none.duckdb").exists()
    unclassified = cli("serve", "--warehouse", str(loaded), expect_ok=False)
    assert unclassified.exit_code == 1 and "run `xpipe classify` first" in unclassified.output


def test_serve_says_when_the_port_is_taken(own_warehouse: Path, cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("--warehouse", str(own_warehouse), "serve", "--port", str(port),
                     expect_ok=False)
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "choose another --port" in result.output
