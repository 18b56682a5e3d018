"""Which sources the ETL reads: https on the allowed hosts, files under one configured folder.

The source is a setting (and a DAG run's conf), so whoever can set it could otherwise make the
ETL fetch any address the worker reaches (the cloud metadata service, an internal admin page)
or read any file it can open, and send the portal's app token along. Every URL the ETL asks,
redirects included, is checked here first.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from crimes.etl.settings import EtlSettings


class SourceRefused(ValueError):
    """The source, or a place it redirected to, is not one the settings allow."""


def allowed_hosts(settings: EtlSettings) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in settings.source_hosts.split(",") if h.strip())


def check_url(url: str, settings: EtlSettings) -> None:
    """Raise SourceRefused unless `url` is https (or plain http to an allowed loopback host,
    when the settings admit it) on one of the allowed hosts, without credentials in it."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as error:
        raise SourceRefused(f"source {url!r} is not a valid URL: {error}") from error
    if parts.username is not None or parts.password is not None:
        raise SourceRefused(f"source {url!r}: credentials in the URL are refused")
    hosts = allowed_hosts(settings)
    if host not in hosts:
        raise SourceRefused(
            f"source host {host or '(none)'!r} is not allowed (CRIMES_SOURCE_HOSTS: "
            f"{', '.join(sorted(hosts)) or 'none'})"
        )
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    if scheme == "http" and settings.source_allow_loopback_http and _is_loopback(host):
        return
    raise SourceRefused(
        f"source {url!r}: only https is allowed"
        + ("" if scheme != "http" else " (plain http only to a loopback host, when admitted)")
    )


def check_file(path: Path, settings: EtlSettings) -> Path:
    """The file's real path, when it lies under the configured folder (links resolved)."""
    if settings.source_folder is None:
        raise SourceRefused(
            f"source file {str(path)!r} refused: no folder is configured for source files "
            "(CRIMES_SOURCE_FOLDER)"
        )
    folder = Path(settings.source_folder).resolve()
    real = Path(path).resolve()
    if not real.is_relative_to(folder):
        raise SourceRefused(
            f"source file {str(path)!r} refused: it is not under {str(folder)!r} "
            "(CRIMES_SOURCE_FOLDER)"
        )
    return real


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs share scheme, host and port: the app token goes only to the
    configured source's origin, never to a place it redirects to."""
    return _origin(url) == _origin(other)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
