"""The ETL's source policy: https on the allowed hosts (the portal by default), plain http only
to an admitted loopback host, files only under the configured folder; every redirect is
checked again, and the app token goes only to the configured source's origin. The redirect
tests use real HTTP servers on this machine."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crimes.etl import source_policy
from crimes.etl.extract import ExtractError, download_portal, extract
from crimes.etl.settings import EtlSettings
from crimes.etl.source_policy import SourceRefused
from tests.etl.conftest import SAMPLE_ROWS, DoubleFactory
from tests.etl.test_extract import etl_settings


def defaults(**overrides: Any) -> EtlSettings:
    """The shipped defaults, whatever the environment says."""
    values: dict[str, Any] = {
        "source_hosts": "data.cityofchicago.org",
        "source_allow_loopback_http": False,
        "source_folder": None,
    }
    return EtlSettings(**(values | overrides))


@pytest.mark.parametrize(
    "url",
    [
        "https://data.cityofchicago.org",
        "https://DATA.cityofchicago.org:443/resource/x.json",
    ],
)
def test_the_portal_over_https_is_allowed_by_default(url: str) -> None:
    source_policy.check_url(url, defaults())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://data.cityofchicago.org", "only https"),
        ("https://data.cityofchicago.org.evil.test", "not allowed"),
        ("https://evil.test/data.cityofchicago.org", "not allowed"),
        ("https://169.254.169.254/latest/meta-data", "not allowed"),
        ("http://127.0.0.1:8080", "not allowed"),
        ("https://user:pw@data.cityofchicago.org", "credentials"),
        ("https://data.cityofchicago.org:notaport", "not a valid URL"),
        ("https:///resource", "not allowed"),
    ],
)
def test_anything_else_is_refused_by_default(url: str, message: str) -> None:
    with pytest.raises(SourceRefused, match=message):
        source_policy.check_url(url, defaults())


def test_plain_http_only_to_a_listed_loopback_host_when_admitted() -> None:
    admitted = defaults(
        source_hosts="127.0.0.1,localhost,10.0.0.5", source_allow_loopback_http=True
    )
    source_policy.check_url("http://127.0.0.1:8080", admitted)
    source_policy.check_url("http://localhost:8080", admitted)
    with pytest.raises(SourceRefused, match="only https"):
        source_policy.check_url("http://10.0.0.5", admitted)  # listed, not loopback
    with pytest.raises(SourceRefused, match="not allowed"):
        source_policy.check_url("http://127.0.0.2", admitted)  # loopback, not listed
    with pytest.raises(SourceRefused, match="only https"):
        source_policy.check_url("http://127.0.0.1", defaults(source_hosts="127.0.0.1"))


def test_files_only_under_the_configured_folder(tmp_path: Path) -> None:
    folder = tmp_path / "sources"
    folder.mkdir()
    inside = folder / "crimes.csv"
    inside.write_text("x\n")
    outside = tmp_path / "secret.csv"
    outside.write_text("x\n")
    (folder / "link.csv").symlink_to(outside)

    with pytest.raises(SourceRefused, match="no folder is configured"):
        source_policy.check_file(inside, defaults())
    settings = defaults(source_folder=folder)
    assert source_policy.check_file(inside, settings) == inside.resolve()
    for path in (outside, folder / ".." / "secret.csv", folder / "link.csv"):
        with pytest.raises(SourceRefused, match="is not under"):
            source_policy.check_file(path, settings)
    # Through extract, as a path and as a file URL.
    for source in (str(outside), outside.as_uri()):
        with pytest.raises(SourceRefused, match="is not under"):
            extract(defaults(source=source, source_folder=folder))


class Redirector:
    """A real HTTP server on 127.0.0.1 that answers every GET with a redirect to `target`
    (plus the path and query it was asked), recording the app token each request carried."""

    def __init__(self, target: str) -> None:
        tokens: list[str | None] = []
        self.tokens = tokens

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                tokens.append(self.headers.get("X-App-Token"))
                self.send_response(302)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, message_format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redirector() -> Iterator[type[Redirector]]:
    made: list[Redirector] = []

    class Made(Redirector):
        def __init__(self, target: str) -> None:
            super().__init__(target)
            made.append(self)

    yield Made
    for one in made:
        one.close()


def test_a_redirect_to_a_host_not_allowed_is_refused_before_it_is_followed(
    portal: DoubleFactory, redirector: type[Redirector]
) -> None:
    double = portal()
    port = double.url.rsplit(":", 1)[1]
    # "localhost" is the same machine, but not a host the settings list.
    away = redirector(f"http://localhost:{port}")
    with pytest.raises(ExtractError, match=r"redirected to a refused place.*'localhost'"):
        download_portal(etl_settings(away.url, source_hosts="127.0.0.1"))
    assert double.requests == []


def test_a_redirect_to_an_allowed_place_is_followed_without_the_token(
    portal: DoubleFactory, redirector: type[Redirector]
) -> None:
    """The token reaches the configured source, never the other origin it redirects to."""
    double = portal()
    hop = redirector(double.url)
    result = download_portal(
        etl_settings(hop.url, page_size=1000, CRIMES_APP_TOKEN="tok-123", source_hosts="127.0.0.1")
    )
    assert result.rows == SAMPLE_ROWS
    assert hop.tokens == ["tok-123"] * 5  # 4 pages + the count
    assert [r.app_token for r in double.requests] == [None] * 5


def test_a_redirect_loop_ends_with_a_clear_error(redirector: type[Redirector]) -> None:
    loop = redirector("")  # every answer sends it back to itself
    with pytest.raises(ExtractError, match="more than 5 redirects"):
        download_portal(etl_settings(loop.url, source_hosts="127.0.0.1"))
