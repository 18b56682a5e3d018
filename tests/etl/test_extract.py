"""Extract against the portal double over real HTTP, and from local export files.

The expected values come from the file read with the csv module and converted to the API's text
format here, independently of the double's vectorized conversion.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from crimes.etl.extract import (
    DATASET_2024,
    DATASET_ALL_YEARS,
    ExtractError,
    dataset_request,
    download_portal,
    extract,
    read_file,
)
from crimes.etl.settings import EtlSettings
from crimes.local.portal_double import Fault, PortalDouble
from tests.etl.conftest import SAMPLE_ROWS, DoubleFactory, Row

HUMAN_ADDRESS = '{"address": "", "city": "", "state": "", "zip": ""}'
FULL_FILE_ROWS = 259_129


def etl_settings(source: str, **overrides: Any) -> EtlSettings:
    """Small pages and quick retries; every field given so the environment cannot leak in."""
    values: dict[str, Any] = {
        "source": source,
        "year": 2024,
        # The alias, not `app_token`: EtlSettings ignores the field name (validation_alias).
        "CRIMES_APP_TOKEN": None,
        "page_size": 700,
        "max_attempts": 3,
        "backoff_seconds": 0.001,
        "request_timeout_seconds": 10.0,
        # The double on 127.0.0.1 over plain http, and the hosts the transports below play.
        "source_hosts": "data.cityofchicago.org,127.0.0.1,portal.test",
        "source_allow_loopback_http": True,
        "source_folder": None,
    }
    values.update(overrides)
    return EtlSettings(**values)


def as_api_text(row: Row) -> Row:
    """A CSV export row as extract gives an API record: ISO dates, location as JSON text."""
    out = dict(row)
    for column in ("date", "updated_on"):
        value = row[column]
        assert value is not None
        parsed = datetime.strptime(value, "%m/%d/%Y %I:%M:%S %p")
        out[column] = parsed.strftime("%Y-%m-%dT%H:%M:%S.000")
    location = row["location"]
    if location is not None:
        longitude, latitude = location.removeprefix("POINT (").removesuffix(")").split(" ")
        out["location"] = json.dumps(
            {"latitude": latitude, "longitude": longitude, "human_address": HUMAN_ADDRESS},
            sort_keys=True,
        )
    return out


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def assert_raw_text(frame: pd.DataFrame) -> None:
    for column in frame.columns:
        assert frame[column].dtype == object, column
        assert all(v is None or isinstance(v, str) for v in frame[column]), column


# -- dataset choice ----------------------------------------------------------------------------


def test_dataset_request_picks_the_2024_dataset_or_filters_all_years() -> None:
    url, params = dataset_request(etl_settings("https://data.cityofchicago.org/", year=2024))
    assert url == f"https://data.cityofchicago.org/resource/{DATASET_2024}.json"
    assert params == {}
    url, params = dataset_request(etl_settings("http://127.0.0.1:9", year=2023))
    assert url == f"http://127.0.0.1:9/resource/{DATASET_ALL_YEARS}.json"
    assert params == {"$where": "year=2023"}


def test_other_year_comes_from_the_all_years_dataset(
    portal: DoubleFactory, sample_frame: pd.DataFrame
) -> None:
    mixed = sample_frame.copy()
    mixed.loc[:999, "year"] = "2023"
    double = portal(frame=mixed)

    result = download_portal(etl_settings(double.url, year=2023))
    assert result.rows == 1000
    assert set(result.frame["year"]) == {"2023"}
    assert list(result.frame["id"]) == list(mixed["id"][:1000])
    assert {r.path for r in double.requests} == {f"/resource/{DATASET_ALL_YEARS}.json"}
    assert all(r.params["$where"] == "year=2023" for r in double.requests)

    # The 2024 dataset holds only 2024's rows.
    result = download_portal(etl_settings(double.url, year=2024))
    assert result.rows == SAMPLE_ROWS - 1000
    assert set(result.frame["year"]) == {"2024"}


# -- paging ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page_size", "pages"),
    [(700, 5), (1000, 4), (SAMPLE_ROWS, 2), (50_000, 1)],
    ids=["short-last-page", "exact-multiple", "one-full-page", "one-short-page"],
)
def test_download_pages_through_every_row_in_order(
    portal: DoubleFactory, sample_rows: list[Row], page_size: int, pages: int
) -> None:
    double = portal()
    result = download_portal(etl_settings(double.url, page_size=page_size))

    assert (result.rows, result.pages, result.fmt) == (SAMPLE_ROWS, pages, "api")
    assert result.source == f"{double.url}/resource/{DATASET_2024}.json"
    assert list(result.frame.columns) == list(sample_rows[0])
    assert records(result.frame) == [as_api_text(row) for row in sample_rows]
    assert [r.params for r in double.requests] == [
        {"$order": ":id", "$limit": str(page_size), "$offset": str(page * page_size)}
        for page in range(pages)
    ] + [{"$select": "count(*)"}]


def test_download_keeps_raw_text(portal: DoubleFactory) -> None:
    frame = download_portal(etl_settings(portal().url, page_size=1000)).frame

    assert_raw_text(frame)
    assert frame["id"].is_unique
    assert {"true", "false"} == set(frame["arrest"]) == set(frame["domestic"])
    first = frame.iloc[0]
    assert (first["beat"], first["district"], first["fbi_code"]) == ("0332", "003", "14")
    assert first["date"] == "2024-12-31T23:58:00.000"
    # Fields the API leaves out of a record are None, not NaN nor "".
    assert frame["location"].isna().sum() == 1
    assert frame["location_description"].isna().sum() == 4
    assert None in set(frame["location"])


def test_app_token_is_sent_as_a_header(portal: DoubleFactory) -> None:
    double = portal()
    download_portal(etl_settings(double.url, page_size=1000, CRIMES_APP_TOKEN="tok-123"))
    assert [r.app_token for r in double.requests] == ["tok-123"] * 5  # 4 pages + count

    double = portal()
    download_portal(etl_settings(double.url, page_size=1000))
    assert [r.app_token for r in double.requests] == [None] * 5


# -- retries -----------------------------------------------------------------------------------


def test_retries_a_500_then_completes(portal: DoubleFactory, sample_rows: list[Row]) -> None:
    double = portal([Fault.http(500, on_request=2)])
    waits: list[float] = []
    result = download_portal(etl_settings(double.url), sleep=waits.append)

    assert records(result.frame) == [as_api_text(row) for row in sample_rows]
    assert [(r.offset, r.status) for r in double.requests[:3]] == [
        (0, 200),
        (700, 500),
        (700, 200),
    ]
    assert waits == [pytest.approx(0.001)]


def test_backoff_doubles_per_attempt(portal: DoubleFactory) -> None:
    double = portal([Fault.http(503, on_request=1, times=1), Fault.http(502, from_offset=0)])
    waits: list[float] = []
    settings = etl_settings(double.url, max_attempts=4, backoff_seconds=0.25)
    result = download_portal(settings, sleep=waits.append)

    assert result.rows == SAMPLE_ROWS
    assert [r.status for r in double.requests[:3]] == [503, 502, 200]
    assert waits == [0.25, 0.5]


def test_429_waits_as_long_as_retry_after_says(portal: DoubleFactory) -> None:
    in_30_s = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    double = portal(
        [Fault.http(429, retry_after="7", on_request=3), Fault.http(429, retry_after=in_30_s)]
    )
    waits: list[float] = []
    result = download_portal(etl_settings(double.url), sleep=waits.append)

    assert result.rows == SAMPLE_ROWS
    assert [r.status for r in double.requests[:4]] == [429, 200, 429, 200]
    assert waits[0] == pytest.approx(30, abs=2)  # the HTTP-date form
    assert waits[1] == 7.0  # delta-seconds, much longer than the tiny backoff


@pytest.mark.parametrize(
    "fault",
    [Fault.truncated(on_request=2), Fault.dropped(on_request=2)],
    ids=["closed-mid-body", "closed-before-answer"],
)
def test_broken_connections_are_retried(
    portal: DoubleFactory, sample_rows: list[Row], fault: Fault
) -> None:
    double = portal([fault])
    result = download_portal(etl_settings(double.url))

    assert records(result.frame) == [as_api_text(row) for row in sample_rows]
    assert double.requests[1].fault == fault.kind
    assert double.requests[2].offset == 700


def test_a_timeout_is_retried(portal: DoubleFactory) -> None:
    double = portal([Fault.slow(1.5, on_request=1)])
    started = time.perf_counter()
    result = download_portal(etl_settings(double.url, request_timeout_seconds=0.3))

    assert result.rows == SAMPLE_ROWS
    assert [r.offset for r in double.requests[:2]] == [0, 0]
    assert time.perf_counter() - started < 1.5


def test_source_failing_mid_download_raises_with_where_and_why(portal: DoubleFactory) -> None:
    double = portal([Fault.http(503, from_offset=1400, times=None)])
    with pytest.raises(ExtractError) as raised:
        download_portal(etl_settings(double.url), sleep=lambda _: None)

    message = str(raised.value)
    assert f"{double.url}/resource/{DATASET_2024}.json" in message
    assert "$offset=1400" in message
    assert "after 3 attempts" in message
    assert "HTTP 503" in message
    assert [r.offset for r in double.requests] == [0, 700, 1400, 1400, 1400]


def test_dropped_connections_exhaust_attempts(portal: DoubleFactory) -> None:
    double = portal([Fault.dropped(times=None)])
    with pytest.raises(ExtractError, match=r"after 3 attempts.*RemoteProtocolError"):
        download_portal(etl_settings(double.url))
    assert len(double.requests) == 3


def test_a_4xx_fails_at_once(portal: DoubleFactory) -> None:
    double = portal([Fault.http(403, on_request=2)])
    with pytest.raises(ExtractError, match=r"\$offset=700 answered HTTP 403 \(not retried\)"):
        download_portal(etl_settings(double.url))
    assert len(double.requests) == 2


def test_an_unknown_dataset_fails_at_once(portal: DoubleFactory) -> None:
    double = portal()
    with pytest.raises(ExtractError, match="HTTP 404"):
        download_portal(etl_settings(double.url + "/elsewhere"))
    assert len(double.requests) == 1


def test_a_server_that_is_down_fails_after_the_attempts() -> None:
    double = PortalDouble(pd.DataFrame({"id": ["1"]})).start()
    url = double.url
    double.stop()  # the port is now closed: connections are refused
    with pytest.raises(ExtractError, match=r"after 2 attempts.*ConnectError"):
        download_portal(etl_settings(url, max_attempts=2))


# -- the double's own SODA behaviour -----------------------------------------------------------


def test_double_speaks_soda(portal: DoubleFactory, sample_frame: pd.DataFrame) -> None:
    double = portal()
    resource = f"{double.url}/resource/{DATASET_ALL_YEARS}.json"
    with httpx.Client() as client:
        default = client.get(resource, headers={"X-App-Token": "t"})
        assert default.status_code == 200
        assert len(default.json()) == 1000  # SODA's default $limit
        assert json.loads(default.headers["X-SODA2-Fields"]) == list(sample_frame.columns)

        by_id = client.get(resource, params={"$order": "id DESC", "$limit": "3"}).json()
        ids = sorted(sample_frame["id"].astype(int), reverse=True)[:3]
        assert [int(row["id"]) for row in by_id] == ids

        first = client.get(resource, params={"$where": "year = '2024'", "$limit": "1"}).json()[0]
        assert first["arrest"] is False
        assert first["beat"] == "0332"
        assert first["location"]["human_address"] == HUMAN_ADDRESS

        for params in ({"$where": "primary_type='THEFT'"}, {"$select": "id"}, {"$limit": "-1"}):
            refused = client.get(resource, params=params)
            assert refused.status_code == 400, params
            assert refused.json()["error"] is True
        assert client.get(f"{double.url}/resource/abcd-efgh.json").status_code == 404
    assert double.requests[0].app_token == "t"


@pytest.mark.timeout(60)
def test_double_runs_standalone(real_data: Path) -> None:
    command = [sys.executable, "-m", "crimes.local.portal_double", "--data", str(real_data)]
    process = subprocess.Popen(
        [*command, "--rows", "50", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # printed once the socket listens
        rows = httpx.get(f"{url}/resource/{DATASET_2024}.json", params={"$limit": "100"}).json()
        assert len(rows) == 50
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


# -- local files -------------------------------------------------------------------------------


def _copy_head(real_data: Path, target: Path, rows: int) -> None:
    """The file's header and first rows, byte for byte (plain or gzip by the target's name)."""
    with gzip.open(real_data, "rb") as source:
        head = b"".join(source.readline() for _ in range(rows + 1))
    if target.name.endswith(".gz"):
        with gzip.open(target, "wb") as sink:
            sink.write(head)
    else:
        target.write_bytes(head)


@pytest.mark.parametrize("name", ["crimes.csv.gz", "crimes.csv"])
def test_read_file_reads_the_csv_export_as_text(
    tmp_path: Path, real_data: Path, sample_rows: list[Row], name: str
) -> None:
    path = tmp_path / name
    _copy_head(real_data, path, SAMPLE_ROWS)
    result = read_file(str(path))

    assert (result.fmt, result.rows, result.pages) == ("csv", SAMPLE_ROWS, 1)
    assert result.source == str(path)
    assert_raw_text(result.frame)
    assert records(result.frame) == sample_rows


@pytest.mark.parametrize("name", ["crimes.json", "crimes.json.gz"])
def test_read_file_reads_api_records(
    tmp_path: Path, portal: DoubleFactory, sample_rows: list[Row], name: str
) -> None:
    double = portal()
    body = httpx.get(
        f"{double.url}/resource/{DATASET_2024}.json", params={"$limit": str(SAMPLE_ROWS)}
    ).content
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as sink:
            sink.write(body)
    else:
        path.write_bytes(body)
    result = read_file(str(path))

    assert (result.fmt, result.rows) == ("json", SAMPLE_ROWS)
    assert_raw_text(result.frame)
    assert records(result.frame) == [as_api_text(row) for row in sample_rows]


def test_read_file_reads_parquet_and_extract_takes_file_urls(
    tmp_path: Path, portal: DoubleFactory
) -> None:
    downloaded = extract(etl_settings(portal().url, page_size=1000))
    assert downloaded.fmt == "api"
    path = tmp_path / "raw.parquet"
    downloaded.frame.to_parquet(path)

    result = extract(etl_settings(path.as_uri(), source_folder=tmp_path))
    assert (result.fmt, result.rows) == ("parquet", SAMPLE_ROWS)
    assert_raw_text(result.frame)
    assert records(result.frame) == records(downloaded.frame)


def test_read_file_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ExtractError, match="not found"):
        read_file(str(tmp_path / "missing.csv"))
    odd = tmp_path / "crimes.xlsx"
    odd.write_bytes(b"")
    with pytest.raises(ExtractError, match="unsupported file type"):
        read_file(str(odd))
    not_records = tmp_path / "crimes.json"
    not_records.write_text('{"error": true}')
    with pytest.raises(ExtractError, match="list of records"):
        read_file(str(not_records))
    with pytest.raises(ExtractError, match="unsupported source"):
        extract(etl_settings("s3://bucket/crimes.csv"))


# -- the whole year ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_full_download_of_every_2024_row(real_data: Path) -> None:
    with PortalDouble(real_data) as double:
        started = time.perf_counter()
        result = download_portal(etl_settings(double.url, page_size=50_000))
        seconds = time.perf_counter() - started

    assert result.rows == FULL_FILE_ROWS
    assert result.pages == 6
    assert result.frame["id"].is_unique
    assert seconds < 60, f"the full download took {seconds:.1f} s"


# -- servers misbehaving beyond the double's faults --------------------------------------------


def _serve(
    answer: Callable[[httpx.Request], httpx.Response], count: int = 1
) -> httpx.MockTransport:
    """A server playing `answer` for pages and counting `count` rows for `count(*)`."""

    def route(request: httpx.Request) -> httpx.Response:
        if "$select" in request.url.params:
            return httpx.Response(200, json=[{"count": str(count)}])
        return answer(request)

    return httpx.MockTransport(route)


def test_a_page_cut_short_with_valid_json_is_caught_by_the_count() -> None:
    rows = [{"id": str(i)} for i in range(5)]

    def cuts_the_second_page(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["$offset"])
        return httpx.Response(200, json=rows[offset : offset + (2 if offset == 0 else 1)])

    settings = etl_settings("https://portal.test", page_size=2)
    with pytest.raises(ExtractError, match="counts 5 rows but paging ended after 3"):
        download_portal(settings, transport=_serve(cuts_the_second_page, count=5))


def test_an_unreadable_count_is_refused() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "$select" in request.url.params:
            return httpx.Response(200, json=[{"count": "many"}])
        return httpx.Response(200, json=[{"id": "1"}])

    with pytest.raises(ExtractError, match="unreadable count"):
        download_portal(etl_settings("https://portal.test"), transport=httpx.MockTransport(answer))


def test_a_server_ignoring_limit_or_offset_is_refused() -> None:
    rows = [{"id": str(i)} for i in range(5)]
    settings = etl_settings("https://portal.test", page_size=2)

    def ignores_limit(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=rows)

    with pytest.raises(ExtractError, match=r"answered 5 rows for \$limit=2"):
        download_portal(settings, transport=_serve(ignores_limit))

    def ignores_offset(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=rows[: int(request.url.params["$limit"])])

    with pytest.raises(ExtractError, match=r"same page for \$offset=0 and 2"):
        download_portal(settings, transport=_serve(ignores_offset))


def test_a_body_that_is_not_records() -> None:
    answers = iter(
        [
            httpx.Response(200, content=b'[{"id": "1"}, {"id'),  # cut short: retried
            httpx.Response(200, json=[{"id": "1", "arrest": True, "n": 1.5}]),
        ]
    )
    result = download_portal(
        etl_settings("https://portal.test"), transport=_serve(lambda _: next(answers))
    )
    # No X-SODA2-Fields header: the records' keys give the columns; odd JSON types become text.
    assert records(result.frame) == [{"id": "1", "arrest": "true", "n": "1.5"}]

    def error_object(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"error": True, "message": "nope"})

    with pytest.raises(ExtractError, match="not a list of records"):
        download_portal(etl_settings("https://portal.test"), transport=_serve(error_object))
