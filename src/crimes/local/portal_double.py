"""A local stand-in for the Chicago Data Portal's Socrata SODA API, serving real crime rows.

The real portal cannot be reached from CI or from this machine, so the ETL is exercised against
this double instead. It serves rows read from a portal CSV export, converted once into the JSON
format the API gives (every value a string except booleans, ISO floating timestamps, `location`
as an object, nulls omitted), over real HTTP on a background thread.

Only what the ETL uses is implemented, and anything else is refused with a Socrata-like HTTP 400
rather than silently ignored, so a client that relies on an unsupported feature fails loudly:

- `GET /resource/dqcy-ctma.json`: "Crimes - 2024" (only rows whose `year` is 2024).
- `GET /resource/ijzp-q8t2.json`: "Crimes - 2001 to Present" (every row of the file).
- `$limit` (default 1000, as SODA 2.0), `$offset`, `$order` (`:id` or `id`, `ASC`/`DESC`),
  `$where` (only `year = N`), `$$app_token`; the `X-App-Token` header is accepted and recorded.

Faults can be injected per request (HTTP errors with `Retry-After`, a connection closed mid-body
or before any response, a slow answer) to test the client's retries.

Run standalone: `python -m crimes.local.portal_double --data FILE [--port P] [--rows N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crimes.ops.logs import get_logger

log = get_logger(__name__)

DATASET_2024 = "dqcy-ctma"
DATASET_ALL_YEARS = "ijzp-q8t2"
# SODA 2.0 answers 1000 rows when $limit is absent; a client that forgets $limit must notice.
DEFAULT_LIMIT = 1000

_DATE_COLUMNS = ("date", "updated_on")
_BOOLEAN_COLUMNS = ("arrest", "domestic")
_CSV_DATE_FORMAT = "%m/%d/%Y %I:%M:%S %p"
_API_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.000"
# The portal's location columns carry no address; the API still sends an all-empty one, as a
# JSON document inside a string.
_HUMAN_ADDRESS = json.dumps({"address": "", "city": "", "state": "", "zip": ""})
# A value needs json.dumps only when it holds a quote, a backslash or a control character;
# everything else is quoted by plain (vectorized) concatenation.
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'
_WHERE_YEAR = re.compile(r"^\s*year\s*=\s*(?:'(\d{1,4})'|(\d{1,4}))\s*$")
_ORDER = re.compile(r"^\s*(:id|id)(?:\s+(asc|desc))?\s*$", re.IGNORECASE)
_SUPPORTED_PARAMS = frozenset({"$limit", "$offset", "$order", "$where", "$select", "$$app_token"})
_COUNT_ALL = re.compile(r"^\s*count\s*\(\s*\*\s*\)\s*$", re.IGNORECASE)

FaultKind = Literal["status", "truncate", "drop", "delay"]


def load_portal_csv(path: str | os.PathLike[str], *, rows: int | None = None) -> pd.DataFrame:
    """Read a portal CSV export (plain or gzip) with every value as text, empty fields as NA."""
    return pd.read_csv(
        path, dtype=str, keep_default_na=False, na_values=[""], nrows=rows, encoding="utf-8"
    )


def _text(values: pd.Series | pa.Array) -> pa.Array:
    if isinstance(values, pd.Series):
        return pa.array(values, type=pa.large_string(), from_pandas=True)
    return values.cast(pa.large_string())


def _join(*parts: pa.Array | str, separator: str = "", skip_nulls: bool = False) -> pa.Array:
    """Element-wise concatenation; a null part makes the result null unless `skip_nulls`."""
    arguments = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(
        *arguments,
        pa.scalar(separator, pa.large_string()),
        null_handling="skip" if skip_nulls else "emit_null",
    )


def _quoted(values: pa.Array) -> pa.Array:
    """Each non-null value as a JSON string literal; nulls stay null."""
    quoted = _join('"', values, '"')
    escape = pc.match_substring_regex(values, _NEEDS_ESCAPE)
    if pc.any(escape).as_py():
        literals = quoted.to_pylist()
        raw = values.to_pylist()
        for i in np.flatnonzero(escape.fill_null(False).to_numpy(zero_copy_only=False)):
            literals[i] = json.dumps(raw[i], ensure_ascii=False)
        quoted = pa.array(literals, type=pa.large_string())
    return quoted


def _api_dates(values: pd.Series, column: str) -> pa.Array:
    parsed = pd.to_datetime(values, format=_CSV_DATE_FORMAT, errors="coerce")
    bad = parsed.isna() & values.notna()
    if bad.any():
        raise ValueError(f"{column}: {int(bad.sum())} values are not {_CSV_DATE_FORMAT!r}")
    return _quoted(_text(parsed.dt.strftime(_API_DATE_FORMAT)))


def _api_booleans(values: pd.Series, column: str) -> pa.Array:
    lowered = values.str.lower()
    bad = ~lowered.isin(["true", "false"]) & values.notna()
    if bad.any():
        raise ValueError(f"{column}: values other than true/false: {values[bad].unique()[:5]}")
    return _text(lowered)


def _api_locations(values: pd.Series) -> pa.Array:
    """Location objects from the export's WKT `POINT (lon lat)` or older `(lat, lon)` text."""
    text = _text(values)
    wkt = pc.extract_regex(text, r"^\s*POINT\s*\(\s*(?P<lon>\S+)\s+(?P<lat>\S+)\s*\)\s*$")
    lat = pc.struct_field(wkt, "lat")
    lon = pc.struct_field(wkt, "lon")
    if pc.any(pc.and_(pc.is_null(lat), pc.is_valid(text))).as_py():
        old = pc.extract_regex(text, r"^\s*\(\s*(?P<lat>[^,\s]+)\s*,\s*(?P<lon>[^,\s]+)\s*\)\s*$")
        lat = pc.coalesce(lat, pc.struct_field(old, "lat"))
        lon = pc.coalesce(lon, pc.struct_field(old, "lon"))
    bad = pc.and_(pc.is_null(lat), pc.is_valid(text))
    if pc.any(bad).as_py():
        first = values[bad.to_numpy(zero_copy_only=False)].iloc[0]
        raise ValueError(f"location: unreadable values such as {first!r}")
    return _join(
        '{"latitude":',
        _quoted(lat),
        ',"longitude":',
        _quoted(lon),
        ',"human_address":' + json.dumps(_HUMAN_ADDRESS) + "}",
    )


def to_api_json(frame: pd.DataFrame) -> list[str]:
    """Each row of a portal CSV export as the JSON object text the SODA API would send.

    Built column by column with Arrow's vectorized string kernels, because per-row json.dumps
    over 259k rows takes several seconds and the double is started by every test.
    """
    if frame.empty:
        return []
    fields = []
    for column in frame.columns:
        name = str(column)
        values = frame[column]
        if name in _DATE_COLUMNS:
            literal = _api_dates(values, name)
        elif name in _BOOLEAN_COLUMNS:
            literal = _api_booleans(values, name)
        elif name == "location":
            literal = _api_locations(values)
        else:
            literal = _quoted(_text(values))
        fields.append(_join(json.dumps(name) + ":", literal))
    # Socrata leaves null fields out of the object instead of sending null.
    members = _join(*fields, separator=",", skip_nulls=True)
    rows: list[str] = _join("{", members, "}").to_pylist()
    return rows


@dataclass(frozen=True)
class RecordedRequest:
    """One request the double received, as the tests inspect it."""

    index: int  # 1-based, in arrival order
    path: str
    params: dict[str, str]
    app_token: str | None
    status: int | None  # None when the connection was dropped without an answer
    fault: FaultKind | None

    @property
    def offset(self) -> int | None:
        raw = self.params.get("$offset", "0")
        return int(raw) if raw.isdigit() else None


@dataclass(frozen=True)
class Fault:
    """A failure the double injects instead of (or before) a normal answer.

    It fires on requests matching every criterion given (`on_request`: the request's 1-based
    index; `from_offset`: `$offset` at least this), at most `times` times (None: always).
    """

    kind: FaultKind = "status"
    status: int = 500
    retry_after: str | None = None
    delay_seconds: float = 0.0
    on_request: int | None = None
    from_offset: int | None = None
    times: int | None = 1

    @classmethod
    def http(
        cls,
        status: int,
        *,
        retry_after: str | None = None,
        on_request: int | None = None,
        from_offset: int | None = None,
        times: int | None = 1,
    ) -> Fault:
        """An HTTP error answer (500, 503, 429 with Retry-After, 403, ...)."""
        return cls("status", status, retry_after, 0.0, on_request, from_offset, times)

    @classmethod
    def truncated(
        cls, *, on_request: int | None = None, from_offset: int | None = None, times: int | None = 1
    ) -> Fault:
        """A 200 whose body stops halfway: the connection is closed mid-body."""
        return cls("truncate", 200, None, 0.0, on_request, from_offset, times)

    @classmethod
    def dropped(
        cls, *, on_request: int | None = None, from_offset: int | None = None, times: int | None = 1
    ) -> Fault:
        """The connection is closed before any byte of an answer."""
        return cls("drop", 0, None, 0.0, on_request, from_offset, times)

    @classmethod
    def slow(
        cls,
        seconds: float,
        *,
        on_request: int | None = None,
        from_offset: int | None = None,
        times: int | None = 1,
    ) -> Fault:
        """A normal answer that only starts after `seconds` (to trip client timeouts)."""
        return cls("delay", 200, None, seconds, on_request, from_offset, times)

    def matches(self, index: int, offset: int | None) -> bool:
        if self.on_request is not None and index != self.on_request:
            return False
        return self.from_offset is None or (offset is not None and offset >= self.from_offset)


# A callable plan decides per request, for failures a list of Fault cannot describe.
FaultPlan = Callable[[int, str, dict[str, str]], Fault | None]


class _SodaError(Exception):
    def __init__(self, status: int, code: str, message: str, **data: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = json.dumps({"code": code, "error": True, "message": message, "data": data})


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Tests open many short connections at once; the default backlog of 5 can refuse some.
    request_queue_size = 64
    double: PortalDouble


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 with Content-Length lets clients keep connections alive across pages.
    protocol_version = "HTTP/1.1"
    server_version = "PortalDouble/1.0"

    def do_GET(self) -> None:
        cast(_Server, self.server).double._handle(self)

    def log_message(self, message_format: str, *args: Any) -> None:
        # The standard handler prints every request to stderr; keep it to debug-level events.
        log.debug("portal_double.http", line=message_format % args)


def admitting(host: str = "127.0.0.1") -> dict[str, str]:
    """The ETL settings (as environment variables) that let its source policy read a double on
    `host`: plain http on a loopback host, which the defaults refuse."""
    return {"CRIMES_SOURCE_HOSTS": host, "CRIMES_SOURCE_ALLOW_LOOPBACK_HTTP": "true"}


class PortalDouble:
    """A Socrata SODA server for the crime datasets on 127.0.0.1, in a background thread.

    `data` is a portal CSV export file or an already-read frame of it (text columns, NA for
    empty fields); `rows` keeps only the first rows, for fast tests.
    """

    def __init__(
        self,
        data: str | os.PathLike[str] | pd.DataFrame,
        *,
        rows: int | None = None,
        faults: Sequence[Fault] | FaultPlan = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        started = time.perf_counter()
        frame = data if isinstance(data, pd.DataFrame) else load_portal_csv(data, rows=rows)
        if rows is not None:
            frame = frame.iloc[:rows]
        self.columns: list[str] = [str(c) for c in frame.columns]
        self._rows = to_api_json(frame)
        self._years = self._int_column(frame, "year")
        ids = self._int_column(frame, "id")
        self._order_by = {
            ":id": np.arange(len(self._rows)),
            "id": np.argsort(ids, kind="stable"),
        }
        self._faults = faults
        self._fired = [0] * (len(faults) if isinstance(faults, Sequence) else 0)
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._log: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        log.info(
            "portal_double.prepared",
            rows=len(self._rows),
            seconds=round(time.perf_counter() - started, 3),
        )

    @staticmethod
    def _int_column(frame: pd.DataFrame, column: str) -> npt.NDArray[np.int64]:
        if column not in frame.columns:
            return np.full(len(frame), -1, dtype=np.int64)
        numbers = pd.to_numeric(frame[column], errors="coerce")
        return numbers.fillna(-1).to_numpy(dtype=np.int64)

    @property
    def row_count(self) -> int:
        return len(self._rows)

    @property
    def url(self) -> str:
        """Base URL like `http://127.0.0.1:PORT`, as `EtlSettings.source` takes it."""
        if self._server is None:
            raise RuntimeError("the portal double is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def admitted(self) -> dict[str, str]:
        return admitting(urlsplit(self.url).hostname or self._host)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def start(self) -> PortalDouble:
        if self._server is not None:
            return self
        # Bound and listening once the constructor returns, so clients need not wait.
        server = _Server((self._host, self._port), _Handler)
        server.double = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        log.info("portal_double.started", url=self.url, rows=len(self._rows))
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> PortalDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- request handling (runs on the server's threads) --

    def _handle(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        token = handler.headers.get("X-App-Token") or params.get("$$app_token")
        with self._lock:
            index = len(self._log) + 1
            fault = self._pick_fault(index, split.path, params)
            # Reserve the slot now so concurrent requests keep arrival order in the log.
            self._log.append(RecordedRequest(index, split.path, params, token, None, None))
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay_seconds)
        if fault is not None and fault.kind == "status":
            response = self._fault_response(fault)
        else:
            try:
                response = self._answer(split.path, params)
            except _SodaError as error:
                response = _Response(error.status, error.body.encode())
        status = None if fault is not None and fault.kind == "drop" else response.status
        with self._lock:
            self._log[index - 1] = RecordedRequest(
                index, split.path, params, token, status, fault.kind if fault else None
            )
        self._write(handler, response, fault)

    def _pick_fault(self, index: int, path: str, params: dict[str, str]) -> Fault | None:
        if not isinstance(self._faults, Sequence):
            return self._faults(index, path, params)
        raw = params.get("$offset", "0")
        offset = int(raw) if raw.isdigit() else None
        for position, fault in enumerate(self._faults):
            exhausted = fault.times is not None and self._fired[position] >= fault.times
            if not exhausted and fault.matches(index, offset):
                self._fired[position] += 1
                return fault
        return None

    @staticmethod
    def _fault_response(fault: Fault) -> _Response:
        codes = {429: "too_many_requests", 403: "forbidden", 404: "not_found"}
        body = {
            "code": codes.get(fault.status, "internal_error" if fault.status >= 500 else "error"),
            "error": True,
            "message": f"injected HTTP {fault.status}",
        }
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return _Response(fault.status, json.dumps(body).encode(), headers)

    def _answer(self, path: str, params: dict[str, str]) -> _Response:
        match = re.fullmatch(r"/resource/([a-z0-9]{4}-[a-z0-9]{4})\.json", path)
        if match is None or match.group(1) not in (DATASET_2024, DATASET_ALL_YEARS):
            raise _SodaError(404, "not_found", f"Not found: {path}")
        unknown = sorted(set(params) - _SUPPORTED_PARAMS)
        if unknown:
            raise _SodaError(
                400,
                "query.soql.unsupported",
                f"The portal double does not support the parameters {unknown}",
                parameters=unknown,
            )
        limit = self._count_param(params, "$limit", DEFAULT_LIMIT)
        offset = self._count_param(params, "$offset", 0)
        order = self._order(params.get("$order", ":id"))
        keep: npt.NDArray[np.bool_] | None = None
        if match.group(1) == DATASET_2024:
            keep = self._years == 2024
        if "$where" in params:
            year_match = _WHERE_YEAR.match(params["$where"])
            if year_match is None:
                raise _SodaError(
                    400,
                    "query.compiler.malformed",
                    f"Could not parse $where {params['$where']!r}: the portal double only "
                    "understands `year = N`",
                    query=params["$where"],
                )
            wanted = self._years == int(year_match.group(1) or year_match.group(2))
            keep = wanted if keep is None else keep & wanted
        if keep is not None:
            order = order[keep[order]]
        if "$select" in params:
            if _COUNT_ALL.match(params["$select"]) is None:
                raise _SodaError(
                    400,
                    "query.compiler.malformed",
                    f"The portal double only selects count(*), not {params['$select']!r}",
                    query=params["$select"],
                )
            # Socrata names the aggregate "count" and, like every value, sends it as text.
            return _Response(200, json.dumps([{"count": str(len(order))}]).encode(), {})
        chosen = order[offset : offset + limit]
        rows = self._rows
        body = ("[" + ",".join([rows[i] for i in chosen.tolist()]) + "]").encode("utf-8")
        headers = {"X-SODA2-Fields": json.dumps(self.columns, separators=(",", ":"))}
        return _Response(200, body, headers)

    @staticmethod
    def _count_param(params: dict[str, str], name: str, default: int) -> int:
        raw = params.get(name)
        if raw is None:
            return default
        if not raw.strip().isdigit():
            raise _SodaError(
                400, "query.soql.invalid", f"{name} must be a non-negative integer, not {raw!r}"
            )
        return int(raw)

    def _order(self, raw: str) -> npt.NDArray[np.intp]:
        match = _ORDER.match(raw)
        if match is None:
            raise _SodaError(
                400,
                "query.compiler.malformed",
                f"The portal double only orders by :id or id, not {raw!r}",
                query=raw,
            )
        order = self._order_by[match.group(1).lower()]
        descending = (match.group(2) or "asc").lower() == "desc"
        return order[::-1] if descending else order

    @staticmethod
    def _write(handler: _Handler, response: _Response, fault: Fault | None) -> None:
        kind = fault.kind if fault is not None else None
        try:
            if kind == "drop":
                handler.close_connection = True
                return
            handler.send_response(response.status)
            handler.send_header("Content-Type", "application/json;charset=utf-8")
            handler.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            if kind == "truncate":
                handler.wfile.write(response.body[: len(response.body) // 2])
                handler.wfile.flush()
                # Closing the socket for writing makes the client see the body end early.
                handler.connection.shutdown(socket.SHUT_RDWR)
                handler.close_connection = True
                return
            handler.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout on a slow fault); nothing left to answer.
            handler.close_connection = True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m crimes.local.portal_double",
        description="Serve a portal CSV export over a local Socrata SODA API.",
    )
    parser.add_argument("--data", required=True, help="portal CSV export (.csv or .csv.gz)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--rows", type=int, default=None, help="serve only the first N rows")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with PortalDouble(args.data, rows=args.rows, host=args.host, port=args.port) as double:
        # Scripts read the URL from stdout; the log line carries it too.
        print(double.url, flush=True)
        stop.wait()
    log.info("portal_double.stopped")


if __name__ == "__main__":
    main()
