"""Extract: the raw crime records, from the Socrata API of the Chicago Data Portal or a file.

The result is the raw data, losslessly as text: every column holds `str` or `None`, whichever
source it came from, so that codes such as `0332`, `003`, `08B` keep their leading zeros and
nothing is parsed before the preprocessing step, which understands both the API's and the CSV
export's formats.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import httpx
import pandas as pd
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential

from crimes.contract import SchemaError, portal_column_names
from crimes.etl import source_policy
from crimes.etl.settings import EtlSettings
from crimes.ops.logs import get_logger

log = get_logger(__name__)

DATASET_2024 = "dqcy-ctma"  # "Crimes - 2024"
DATASET_ALL_YEARS = "ijzp-q8t2"  # "Crimes - 2001 to Present"
# Paging by the system row id is what Socrata documents as stable across pages.
PAGE_ORDER = ":id"
# One wait is never longer than this, whatever the attempt number or the server asks: a worker
# stuck for an hour on one page is worse than a failed task that the scheduler retries.
MAX_WAIT_SECONDS = 300.0
_ERROR_BODY_CHARS = 300

Format = Literal["api", "csv", "json", "parquet", "synthetic"]

# The source naming the project's labelled synthetic sample: `synthetic` or `synthetic:ROWS`.
SYNTHETIC_SCHEME = "synthetic"
SYNTHETIC_DEFAULT_ROWS = 20_000
MAX_REDIRECTS = 5


class ExtractError(RuntimeError):
    """The raw records could not be extracted; no partial result exists."""


@dataclass(frozen=True)
class RawRecords:
    """Raw records as text (`str` or `None` in object columns), with where they came from."""

    frame: pd.DataFrame
    source: str
    pages: int
    rows: int
    fmt: Format


class SourceUnreachable(ExtractError):
    """The source did not answer usably, attempt after attempt (not the user's input)."""


class _TransientError(Exception):
    """A failure worth another attempt: 408/429/5xx, a broken connection, a timeout."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def dataset_request(settings: EtlSettings) -> tuple[str, dict[str, str]]:
    """The resource URL and filter parameters of `settings.year`'s crimes.

    2024 has a dataset of its own; any other year is filtered out of the all-years dataset.
    """
    base = settings.source.rstrip("/")
    if settings.year == 2024:
        return f"{base}/resource/{DATASET_2024}.json", {}
    return f"{base}/resource/{DATASET_ALL_YEARS}.json", {"$where": f"year={settings.year}"}


def download_portal(
    settings: EtlSettings,
    *,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> RawRecords:
    """Download every record of `settings.year` from a Socrata server, page by page.

    Pages of `settings.page_size` rows ordered by `:id` are requested until a short one. Each
    page is retried on 408/429/5xx, connection errors and timeouts, with exponential backoff
    (`backoff_seconds` doubled per attempt) or the server's Retry-After when that is longer.
    Raises ExtractError once a page has failed `max_attempts` times or on any other 4xx.
    `sleep` and `transport` are injectable so that tests can check the waits without spending
    them and play servers that misbehave in ways the portal double does not.
    """
    url, base_params = dataset_request(settings)
    source_policy.check_url(url, settings)
    source = str(httpx.URL(url, params=base_params))
    headers = {"Accept": "application/json"}
    started = time.perf_counter()
    frames: list[pd.DataFrame] = []
    columns: list[str] = []
    total = 0
    pages = 0
    first_record: dict[str, Any] | None = None
    with httpx.Client(
        headers=headers,
        timeout=httpx.Timeout(settings.request_timeout_seconds),
        # Followed by hand (_get): each place is checked, and the token stays at home.
        follow_redirects=False,
        transport=transport,
    ) as client:
        log.info("extract.download.start", url=source, page_size=settings.page_size)
        while True:
            params = {
                **base_params,
                "$order": PAGE_ORDER,
                "$limit": str(settings.page_size),
                "$offset": str(total),
            }
            records, fields = _fetch_page(client, url, params, settings, sleep)
            pages += 1
            # A server that ignores $limit or $offset would make this loop return duplicated
            # rows, or never end; refuse rather than publish either.
            if len(records) > settings.page_size:
                raise ExtractError(
                    f"{url} answered {len(records)} rows for $limit={settings.page_size}"
                )
            if records and first_record is not None and records[0] == first_record:
                raise ExtractError(f"{url} answered the same page for $offset=0 and {total}")
            if records and first_record is None:
                first_record = records[0]
            if fields:
                columns.extend(c for c in fields if c not in columns)
            if records:
                frames.append(_records_frame(records))
            total += len(records)
            log.info(
                "extract.download.page",
                page=pages,
                offset=int(params["$offset"]),
                page_rows=len(records),
                rows=total,
                elapsed_s=round(time.perf_counter() - started, 2),
            )
            if len(records) < settings.page_size:
                break
        # Paging stops at the first short page; the server's count tells a true end from a
        # page that came back cut short.
        expected = _expected_rows(client, url, base_params, settings, sleep)
    if total < expected:
        raise ExtractError(
            f"{source} counts {expected} rows but paging ended after {total}: a page came back "
            "short; nothing was kept"
        )
    if total > expected:
        log.warning("extract.download.grew", expected=expected, rows=total)
    frame = _combine(frames, columns)
    if "id" in frame.columns and frame["id"].duplicated().any():
        # Rows inserted or deleted while paging shift the pages; say so rather than hide it.
        log.warning(
            "extract.download.duplicate_ids", duplicates=int(frame["id"].duplicated().sum())
        )
    log.info(
        "extract.download.done",
        url=source,
        rows=len(frame),
        pages=pages,
        seconds=round(time.perf_counter() - started, 2),
    )
    return RawRecords(frame=frame, source=source, pages=pages, rows=len(frame), fmt="api")


def _expected_rows(
    client: httpx.Client,
    url: str,
    base_params: Mapping[str, str],
    settings: EtlSettings,
    sleep: Callable[[float], None],
) -> int:
    """How many rows the server holds for the query, by SoQL `count(*)`."""
    records, _ = _fetch_page(client, url, {**base_params, "$select": "count(*)"}, settings, sleep)
    try:
        (record,) = records
        (value,) = record.values()
        return int(value)
    except (TypeError, ValueError) as error:
        raise ExtractError(f"{url} answered an unreadable count(*): {records!r:.200}") from error


def _fetch_page(
    client: httpx.Client,
    url: str,
    params: Mapping[str, str],
    settings: EtlSettings,
    sleep: Callable[[float], None],
) -> tuple[list[dict[str, Any]], list[str]]:
    """One page's records and the server's column list (empty when it sends none)."""
    # Unencoded on purpose: the message is for people ("$offset=1400", not "%24offset=1400").
    where = f"GET {url}?" + "&".join(f"{key}={value}" for key, value in params.items())
    exponential = wait_exponential(multiplier=settings.backoff_seconds, max=MAX_WAIT_SECONDS)

    def wait(state: RetryCallState) -> float:
        delay = exponential(state)
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, _TransientError) and error.retry_after is not None:
            delay = max(delay, min(error.retry_after, MAX_WAIT_SECONDS))
        return delay

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "extract.download.retry",
            request=where,
            attempt=state.attempt_number,
            max_attempts=settings.max_attempts,
            reason=str(error),
            wait_s=round(state.upcoming_sleep, 3),
        )

    retrying = Retrying(
        stop=stop_after_attempt(settings.max_attempts),
        wait=wait,
        retry=retry_if_exception_type(_TransientError),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    attempts = 0
    try:
        for attempt in retrying:
            with attempt:
                attempts += 1
                return _get_page(client, url, params, where, settings)
    except _TransientError as error:
        raise SourceUnreachable(
            f"{where} failed after {attempts} attempts; last error: {error.reason}"
        ) from error
    raise AssertionError("unreachable: tenacity either returns or raises")


def _get_page(
    client: httpx.Client, url: str, params: Mapping[str, str], where: str, settings: EtlSettings
) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        response = _get(client, url, params, settings)
    except httpx.TimeoutException as error:
        raise _TransientError(f"timeout ({type(error).__name__}: {error})") from error
    except httpx.TransportError as error:
        # Refused or reset connections, and bodies cut short (RemoteProtocolError).
        raise _TransientError(f"connection error ({type(error).__name__}: {error})") from error
    status = response.status_code
    if status in (408, 429) or status >= 500:
        raise _TransientError(
            f"HTTP {status}: {_snippet(response)}",
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    if status != 200:
        raise ExtractError(f"{where} answered HTTP {status} (not retried): {_snippet(response)}")
    try:
        payload = json.loads(response.content)
    except ValueError as error:
        # A 200 with a body that is not JSON is nearly always a transfer cut short by a proxy.
        raise _TransientError(
            f"invalid JSON in a {len(response.content)}-byte body: {error}"
        ) from error
    if not isinstance(payload, list) or not all(isinstance(row, dict) for row in payload):
        raise ExtractError(f"{where} answered a JSON document that is not a list of records")
    return payload, _soda_fields(response.headers.get("X-SODA2-Fields"))


def _get(
    client: httpx.Client, url: str, params: Mapping[str, str] | None, settings: EtlSettings
) -> httpx.Response:
    """GET, following redirects only to places the source policy allows; the app token is
    sent only to the configured source's own origin."""
    for _ in range(MAX_REDIRECTS + 1):
        headers = {}
        if settings.app_token is not None and source_policy.same_origin(url, settings.source):
            headers["X-App-Token"] = settings.app_token.get_secret_value()
        response = client.get(url, params=params, headers=headers)
        if not response.has_redirect_location:
            return response
        target = str(response.url.join(response.headers["Location"]))
        try:
            source_policy.check_url(target, settings)
        except source_policy.SourceRefused as error:
            raise ExtractError(f"{response.url} redirected to a refused place: {error}") from error
        url, params = target, None
    raise ExtractError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:_ERROR_BODY_CHARS] + ("..." if len(text) > _ERROR_BODY_CHARS else "")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _soda_fields(header: str | None) -> list[str]:
    # Socrata lists the dataset's columns in this header, in the dataset's order, but leaves it
    # out of large answers; the records' own keys are the fallback.
    if not header:
        return []
    try:
        fields = json.loads(header)
    except ValueError:
        return []
    if isinstance(fields, list) and all(isinstance(f, str) for f in fields):
        return fields
    return []


def _records_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """API-format records as text columns; a key absent from a record is a null field."""
    # dtype=object keeps the parsed Python values: letting pandas infer its Arrow string dtype
    # first and converting back to str/None objects would cost more than the whole parse.
    return _text_frame(pd.DataFrame(records, dtype=object))


def _as_text(values: pd.Series) -> pd.Series:
    """A column as object dtype holding `str` or `None`, without any loss."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind == "boolean":
        converted = values.map({True: "true", False: "false"})
    elif kind in ("string", "empty"):
        converted = values
    else:
        converted = values.map(_cell_text, na_action="ignore")
    text = converted.astype(object)
    return text.where(text.notna(), None)


_sorted_json = json.JSONEncoder(sort_keys=True).encode


def _cell_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        # The API's `location` object; sorted keys give one text per value whatever key order
        # the server used.
        return _sorted_json(value)
    if isinstance(value, int | float):
        return json.dumps(value)
    return str(value)


def _text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({str(column): _as_text(frame[column]) for column in frame.columns})


def _combine(pages: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    """One frame of text pages: the server's column list first (in its order, even a column
    null in every row), then any key it did not list."""
    frame = pd.concat(pages, ignore_index=True, sort=False) if pages else pd.DataFrame()
    ordered = list(columns) + [str(c) for c in frame.columns if c not in columns]
    frame = frame.reindex(columns=ordered).astype(object)
    # Pages without some key, and the reindexing, leave NaN where the contract says None.
    return frame.where(frame.notna(), None)


def read_file(path: str) -> RawRecords:
    """Read raw records from a local export: .csv / .csv.gz (the portal's CSV export), .json or
    .json.gz (a list of API-format records) or .parquet. A `file://` URL is accepted."""
    local = _local_path(path)
    if not local.is_file():
        raise ExtractError(f"source file not found: {local}")
    name = local.name.lower()
    fmt: Format
    started = time.perf_counter()
    try:
        if name.endswith((".csv", ".csv.gz")):
            fmt = "csv"
            raw = pd.read_csv(
                local, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8"
            )
            frame = _text_frame(raw)
        elif name.endswith((".json", ".json.gz")):
            fmt = "json"
            opener = gzip.open if name.endswith(".gz") else open
            with opener(local, "rb") as stream:
                payload = json.load(stream)
            if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
                raise ExtractError(f"{local}: expected a JSON list of records")
            frame = _records_frame(payload)
        elif name.endswith(".parquet"):
            fmt = "parquet"
            frame = _text_frame(pd.read_parquet(local))
        else:
            raise ExtractError(
                f"{local}: unsupported file type (expected .csv, .csv.gz, .json, .json.gz "
                "or .parquet)"
            )
    except ExtractError:
        raise
    except (OSError, ValueError) as error:
        # pandas' parser errors are ValueErrors; gzip's and pyarrow's are OSErrors.
        raise ExtractError(f"could not read {local}: {type(error).__name__}: {error}") from error
    log.info(
        "extract.file.done",
        path=str(local),
        fmt=fmt,
        rows=len(frame),
        seconds=round(time.perf_counter() - started, 2),
    )
    return RawRecords(frame=frame, source=str(local), pages=1, rows=len(frame), fmt=fmt)


def _local_path(path: str) -> Path:
    if path.startswith("file:"):
        parts = urlsplit(path)
        if parts.netloc not in ("", "localhost"):
            raise ExtractError(f"file URL on another host is not supported: {path}")
        return Path(url2pathname(unquote(parts.path)))
    return Path(path)


def synthetic_sample(source: str, year: int) -> RawRecords:
    """The project's generated sample: NOT real crimes, and labelled so everywhere."""
    from crimes.etl import synthetic

    _, _, count = source.partition(":")
    try:
        rows = int(count) if count else SYNTHETIC_DEFAULT_ROWS
    except ValueError as error:
        raise ExtractError(f"bad synthetic source {source!r}: expected synthetic:ROWS") from error
    if rows < 1:
        raise ExtractError(f"bad synthetic source {source!r}: ROWS must be positive")
    log.warning("extract.synthetic", rows=rows, note="SYNTHETIC sample, not real crimes")
    frame = synthetic.sample(rows, year=year).astype("object")
    frame = frame.where(frame.notna(), None)
    return RawRecords(frame=frame, source=source, pages=1, rows=rows, fmt="synthetic")


def extract(settings: EtlSettings) -> RawRecords:
    """The raw records `settings.source` names: a Socrata server or a local file, once the
    source policy admits it (SourceRefused otherwise)."""
    source = settings.source.strip()
    scheme = urlsplit(source).scheme.lower()
    if source.split(":", 1)[0] == SYNTHETIC_SCHEME:
        if not settings.source_allow_synthetic:
            raise source_policy.SourceRefused(
                f"{source!r}: synthetic sources are off (CRIMES_SOURCE_ALLOW_SYNTHETIC=true "
                "only where a deployment allows them: the demo, tests)"
            )
        return synthetic_sample(source, settings.year)
    if scheme in ("http", "https"):
        result = download_portal(settings)
    elif scheme in ("", "file") or Path(source).exists():
        result = read_file(str(source_policy.check_file(_local_path(source), settings)))
    else:
        raise ExtractError(f"unsupported source {source!r}: expected http(s)://, file:// or a path")
    if result.fmt != "api":
        try:
            result.frame.columns = portal_column_names(result.frame.columns)
        except SchemaError as error:
            raise ExtractError(f"{result.source}: {error}") from error
    if result.fmt != "api" and "year" in result.frame.columns:
        # A file is taken as it is (the raw zone keeps what the source gave), but rows of
        # another year than the one asked for are worth a warning.
        other = int((result.frame["year"] != str(settings.year)).sum())
        if other:
            log.warning("extract.file.other_years", year=settings.year, rows=other)
    return result
