"""TAP queries that either return the complete answer or fail loudly, through pyvo.

Why this layer: pyvo leaves three things to its caller that a long catalogue pull cannot do
without. (1) A result whose QUERY_STATUS is OVERFLOW is truncated at MAXREC; pyvo only warns,
here it raises `Overflow` so the caller splits the page. (2) Connection drops, 5xx answers,
stalls and VOTables cut mid-stream are transient on a busy service: each query is retried a
bounded number of times with exponential backoff, then fails with the last cause named.
(3) pyvo's sync requests have no timeout and its async wait has no overall deadline; both are
bounded here. Each service's configuration (`csc.CscConfig`, `simbad.SimbadConfig`) extends
`TapServiceConfig`, which makes its `client`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any, Self
from urllib.parse import urlencode

import pyarrow as pa
import requests
from pyvo.dal import DALFormatError, DALQueryError, DALServiceError, TAPService

from xpipe.core.errors import InputError
from xpipe.core.errors import ServiceError as CoreServiceError
from xpipe.services.votable import astropy_to_arrow

SleepFn = Callable[[float], None]
LogFn = Callable[[str], None]

RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
    ConnectionError, TimeoutError, DALFormatError,
)


class ServiceError(CoreServiceError):
    """A service query failed for good: rejected, or still failing after every retry."""


class QueryRefusedError(ServiceError):
    """The service read the query and refused it (an ADQL error, an unsupported construct):
    asking again cannot help, asking differently may."""


class Overflow(Exception):  # noqa: N818 - a result status, not a failure
    """The service truncated the result (QUERY_STATUS OVERFLOW): fetch smaller pieces."""


class TransientError(Exception):
    """A failure worth retrying that pyvo does not raise itself (e.g. a job lost mid-run)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts; the wait doubles from `backoff_s` up to `backoff_max_s`."""

    attempts: int = 6
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))


@dataclass(frozen=True)
class TapServiceConfig:
    """One TAP service and how to query it: what every service's configuration shares
    (pyvo's service URL, astroquery's TIMEOUT and ROW_LIMIT, and a retry policy).

    `csc.CscConfig` and `simbad.SimbadConfig` extend it with their own query parameters."""

    url: str
    _: KW_ONLY
    timeout_s: float = 300.0  # per HTTP request: connect and each read
    job_timeout_s: float = 3600.0  # whole async job, submit to result
    poll_s: float = 2.0  # async phase polling interval
    row_limit: int = 50_000  # MAXREC of one query: the page size
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.row_limit < 1:
            raise InputError(f"row limit must be at least 1, got {self.row_limit}")
        if min(self.timeout_s, self.job_timeout_s) <= 0:
            raise InputError("TAP timeouts must be positive")

    def with_url(self, url: str | None) -> Self:
        """This configuration pointed at another service (None or "" keeps the URL)."""
        return self if not url else replace(self, url=url)

    def sync_url(self, adql: str, fmt: str = "votable") -> str:
        """A link that runs `adql` on this service (TAP's synchronous GET form): a browser or
        TOPCAT opens it as the query's result."""
        query = urlencode({"REQUEST": "doQuery", "LANG": "ADQL", "FORMAT": fmt,
                           "QUERY": adql})
        return f"{self.url.rstrip('/')}/sync?{query}"

    def client(self, *, log: LogFn | None = None, sleep: SleepFn = time.sleep) -> TapClient:
        return TapClient(self, sleep=sleep, log=log)


@dataclass(frozen=True)
class TapResult:
    table: pa.Table
    mode: str
    attempts: int
    seconds: float


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind a pyvo or requests error, if there was one."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:  # pyvo says 0 when no answer came at all
        return code
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the network or the server failed, not the query itself."""
    if isinstance(exc, TransientError | Overflow):
        return isinstance(exc, TransientError)
    if isinstance(exc, DALQueryError):
        return False  # the service read the query and refused it (ADQL error, bad column…)
    status = http_status(exc)
    if status is not None:
        return status in RETRYABLE_HTTP
    if isinstance(exc, DALServiceError):
        cause = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
        return cause is None or is_transient(cause) or isinstance(cause, OSError)
    if isinstance(exc, TRANSIENT_EXCEPTIONS):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and is_transient(cause)


def describe(exc: BaseException) -> str:
    status = http_status(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    head = f"HTTP {status}" if status else type(exc).__name__
    return f"{head}: {text[:300]}" if text else head


class TimeoutSession(requests.Session):
    """A requests session whose every request has a timeout unless one is given."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any
                ) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return super().request(method, url, *args, **kwargs)


def result_status(results: Any) -> str:
    return str(getattr(results, "query_status", None) or "OK").upper()


class TapClient:
    """Complete-or-fail TAP queries (see the module docstring)."""

    def __init__(self, settings: TapServiceConfig, *, sleep: SleepFn = time.sleep,
                 log: LogFn | None = None) -> None:
        self.settings = settings
        self.sleep = sleep
        self.log = log or (lambda _msg: None)
        self.session = TimeoutSession(settings.timeout_s)
        self.service = TAPService(settings.url, session=self.session)

    def query(self, adql: str, *, maxrec: int | None = None, mode: str = "sync",
              uploads: dict[str, Any] | None = None, retry_overflow: bool = False
              ) -> TapResult:
        """All rows of `adql` (at most `maxrec`, by default the configuration's row_limit);
        raises Overflow when truncated (unless `retry_overflow`: for answers that cannot
        legitimately overflow, such as a COUNT), ServiceError when it gives up."""
        policy = self.settings.retry
        maxrec = self.settings.row_limit if maxrec is None else maxrec
        start = time.monotonic()
        for attempt in range(1, policy.attempts + 1):
            try:
                table = self._once(adql, maxrec, mode, uploads)
                return TapResult(table, mode, attempt, time.monotonic() - start)
            except Overflow as exc:
                if not retry_overflow:
                    raise
                failure: Exception = TransientError(f"a one-row answer said OVERFLOW ({exc})")
            except Exception as exc:
                failure = exc
            self._give_up_or_wait(failure, attempt, start, adql)
        raise AssertionError("unreachable")

    def _give_up_or_wait(self, exc: Exception, attempt: int, start: float, adql: str) -> None:
        """Raise ServiceError for a refusal or the last attempt; otherwise back off."""
        policy = self.settings.retry
        if not is_transient(exc):
            raise QueryRefusedError(f"{self.settings.url} refused the query: {describe(exc)}\n"
                               f"query: {adql}") from exc
        if attempt >= policy.attempts:
            raise ServiceError(
                f"{self.settings.url}: query still failing after {attempt} attempts over "
                f"{time.monotonic() - start:.0f} s; last error {describe(exc)}") from exc
        wait = policy.delay(attempt)
        self.log(f"attempt {attempt} failed ({describe(exc)}); retrying in {wait:.1f} s")
        self.sleep(wait)

    def count(self, adql: str) -> int:
        """A single-row COUNT(*) query's value."""
        table = self.query(adql, maxrec=10, retry_overflow=True).table
        if table.num_rows != 1 or table.num_columns < 1:
            raise ServiceError(f"{self.settings.url}: COUNT query returned {table.num_rows} "
                               f"rows: {adql}")
        value = table.column(0)[0].as_py()
        if value is None:
            raise ServiceError(f"{self.settings.url}: COUNT query returned NULL: {adql}")
        return int(value)

    def _once(self, adql: str, maxrec: int, mode: str, uploads: dict[str, Any] | None
              ) -> pa.Table:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyvo warns on OVERFLOW; we check it explicitly
            if mode == "async":
                results = self._run_async(adql, maxrec, uploads)
            else:
                results = self.service.create_query(adql, maxrec=maxrec,
                                                    uploads=uploads).execute()
            if result_status(results) == "OVERFLOW":
                raise Overflow(f"result truncated at MAXREC={maxrec}")
            return astropy_to_arrow(results.to_table())

    def _run_async(self, adql: str, maxrec: int, uploads: dict[str, Any] | None) -> Any:
        """Submit, poll to a final phase within job_timeout_s, fetch, delete."""
        job = self.service.submit_job(adql, maxrec=maxrec, uploads=uploads)
        try:
            job.run()
            deadline = time.monotonic() + self.settings.job_timeout_s
            while (phase := job.phase) not in {"COMPLETED", "ERROR", "ABORTED"}:
                if phase not in {"PENDING", "QUEUED", "EXECUTING", "HELD", "SUSPENDED"}:
                    raise TransientError(f"async job {job.url} in unexpected phase {phase}")
                if time.monotonic() > deadline:
                    raise TransientError(f"async job {job.url} not done after "
                                         f"{self.settings.job_timeout_s:.0f} s")
                self.sleep(self.settings.poll_s)
            if phase == "ABORTED":
                raise TransientError(f"async job {job.url} was aborted by the service")
            job.raise_if_error()
            try:
                return job.fetch_result()
            except (DALQueryError, DALServiceError):
                raise
            except Exception as exc:  # a result cut mid-stream fails inside the XML parser
                raise TransientError(f"unreadable result of {job.url}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):  # a job left behind expires on the server
                job.delete()
