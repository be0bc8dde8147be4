"""An HTTP proxy on loopback that sits between pyvo and a TAP server and breaks on schedule.

Why: the pull must survive what a real, busy service does (dropped connections, 5xx, stalls,
VOTables cut mid-stream, truncated results), and that can only be shown by doing those things
to real TAP traffic. The test sets a schedule: the n-th *data* request (a sync query or an
async result fetch; 1-based) gets a fault; `always` breaks every data request. Other requests
(job creation, polling, capabilities) pass through unless `control_faults` says otherwise.
URLs in answers are rewritten to point back at the proxy, so async jobs stay behind it.

Faults:
  drop      close the connection without answering
  500, 503  answer with that HTTP status and an HTML body
  stall     wait `stall_s` (longer than the client's timeout), then close
  cut       send the headers and half of the body, then close (a VOTable cut mid-stream)
  truncate  a complete HTTP answer whose VOTable stops halfway (unparseable XML)
  overflow  the real answer with its final QUERY_STATUS rewritten to OVERFLOW
`always` with `always_from` breaks every data request from that one on; `rename=(old, new)`
renames a FIELD in every data answer (a service that changed a column); `refuse=(" JOIN ",
"COUNT(")` answers every query whose ADQL contains one of those strings (case-insensitive) with
HTTP 400 and a VOTable QUERY_STATUS ERROR, as a TAP service whose ADQL parser lacks them
(sync queries and async job creation alike; `refused` lists what was refused).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

FAULTS = ("drop", "500", "503", "stall", "cut", "truncate", "overflow")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "proxy-connection", "te", "trailer", "upgrade", "accept-encoding"}
STATUS_OK = re.compile(rb'(name="QUERY_STATUS"\s+value=")OK(")')
REFUSAL = ('<?xml version="1.0" encoding="utf-8"?>\n'
           '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE '
           'type="results"><INFO name="QUERY_STATUS" value="ERROR">Could not parse your '
           'query: {what} is not supported by this service</INFO></RESOURCE></VOTABLE>')


def adql_of(path: str, body: bytes) -> str:
    """The QUERY parameter of a TAP request (URL or form body), or ''."""
    params = parse_qs(urlsplit(path).query)
    if body:
        params.update(parse_qs(body.decode("utf-8", "replace")))
    return " ".join(params.get("QUERY", []) + params.get("query", []))


def is_data_request(method: str, path: str) -> bool:
    clean = path.split("?", 1)[0].rstrip("/")
    return clean.endswith("/sync") or clean.endswith("/results/result")


class FaultProxy:
    """Start with `with FaultProxy(upstream) as proxy:`; its TAP URL is `proxy.url`."""

    def __init__(self, upstream: str, schedule: dict[int, str] | None = None,
                 always: str | None = None, always_from: int = 1, stall_s: float = 3.0,
                 delay_s: float = 0.0, control_faults: dict[int, str] | None = None,
                 rename: tuple[str, str] | None = None, refuse: tuple[str, ...] = ()
                 ) -> None:
        for fault in [*(schedule or {}).values(), *(control_faults or {}).values(),
                      *([always] if always else [])]:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.upstream_path = parts.path.rstrip("/")
        self.upstream_origin = f"http://{parts.netloc}".encode()
        self.schedule = dict(schedule or {})
        self.control_faults = dict(control_faults or {})
        self.always = always
        self.always_from = always_from
        self.rename = rename
        self.refuse = tuple(refuse)
        self.refused: list[str] = []
        self.stall_s = stall_s
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.data_requests = 0
        self.control_requests = 0
        self.injected: list[tuple[int, str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}".encode()
        self.url = self.origin.decode() + self.upstream_path
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def next_fault(self, method: str, path: str) -> str | None:
        with self.lock:
            if is_data_request(method, path):
                self.data_requests += 1
                fault = self.schedule.get(self.data_requests) or (
                    self.always if self.data_requests >= self.always_from else None)
                number = self.data_requests
            else:
                self.control_requests += 1
                fault = self.control_faults.get(self.control_requests)
                number = -self.control_requests
            if fault:
                self.injected.append((number, path, fault))
            return fault

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=600)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            out_headers = [(k, v.replace(self.upstream_origin.decode(), self.origin.decode()))
                           for k, v in response.getheaders() if k.lower() not in HOP_HEADERS]
            return response.status, out_headers, data.replace(self.upstream_origin, self.origin)
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                if body:
                    headers["Content-Length"] = str(len(body))
                adql = adql_of(self.path, body)
                what = next((w for w in proxy.refuse if w.upper() in adql.upper()), None)
                if what is not None:
                    with proxy.lock:
                        proxy.refused.append(adql)
                    return self._send(400, [("Content-Type", "text/xml")],
                                      REFUSAL.format(what=what.strip()).encode())
                fault = proxy.next_fault(self.command, self.path)
                if proxy.delay_s and is_data_request(self.command, self.path):
                    time.sleep(proxy.delay_s)
                if fault == "drop":
                    return self._close()
                if fault in {"500", "503"}:
                    return self._send(int(fault), [("Content-Type", "text/html")],
                                      b"<html><body>Service unavailable</body></html>")
                if fault == "stall":
                    time.sleep(proxy.stall_s)
                    return self._close()
                status, out_headers, data = proxy.forward(self.command, self.path, headers, body)
                if fault == "overflow":
                    data = overflowed(data)
                if proxy.rename and is_data_request(self.command, self.path):
                    old, new = (f'name="{n}"'.encode() for n in proxy.rename)
                    data = data.replace(old, new)
                if fault == "truncate":
                    data = data[: len(data) // 2]
                if fault == "cut":
                    return self._send(status, out_headers, data, cut=True)
                return self._send(status, out_headers, data)

            def _send(self, status: int, headers: list[tuple[str, str]], data: bytes,
                      cut: bool = False) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if cut else data)
                self.wfile.flush()
                if cut:
                    self._close()
                self.close_connection = True

            def _close(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_POST = do_DELETE = _handle  # noqa: N815

        return Handler


def overflowed(data: bytes) -> bytes:
    """The last QUERY_STATUS of a VOTable set to OVERFLOW (pyvo reads the last one)."""
    matches = list(STATUS_OK.finditer(data))
    if not matches:
        return data
    last = matches[-1]
    return data[: last.start()] + last.group(1) + b"OVERFLOW" + last.group(2) + data[last.end():]
