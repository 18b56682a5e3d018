"""TLS for the model services' gRPC port and the channels that call it (optional: off unless
certificate files are named).

A model service given a certificate and its key serves TLS only on its port (no plaintext
beside it); given a client CA too, it also requires each client to present a certificate that
CA signed (mutual TLS). A client given the CA that signed the services' certificates verifies
them, and may present its own certificate. Files are read once, at start: a missing or
unreadable file stops the program with the setting's name, never a plaintext fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # gRPC is imported where a channel or a server is made, not before
    import grpc


class TlsSettingsError(ValueError):
    """A TLS file that is named but cannot be used."""


def read_pem(path: Path, setting: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TlsSettingsError(f"{setting}: cannot read {path}: {error.strerror}") from error
    if b"-----BEGIN " not in data:
        raise TlsSettingsError(f"{setting}: {path} is not a PEM file")
    return data


@dataclass(frozen=True)
class ServerTls:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def credentials(self, prefix: str) -> grpc.ServerCredentials:
        import grpc

        pair = (
            read_pem(self.key_file, f"{prefix}TLS_KEY_FILE"),
            read_pem(self.cert_file, f"{prefix}TLS_CERT_FILE"),
        )
        if self.client_ca_file is None:
            return grpc.ssl_server_credentials([pair])
        return grpc.ssl_server_credentials(
            [pair],
            root_certificates=read_pem(self.client_ca_file, f"{prefix}TLS_CLIENT_CA_FILE"),
            require_client_auth=True,
        )


@dataclass(frozen=True)
class ClientTls:
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    # The name the services' certificates carry, when the address dialled is not it (an IP).
    server_name: str | None = None
    # How the files' settings are named in errors (e.g. "CRIMES_GATEWAY_MODEL_").
    setting_prefix: str = ""

    @cached_property
    def credentials(self) -> grpc.ChannelCredentials:
        """Built once from the files: every channel opened with them shares them."""
        import grpc

        prefix = self.setting_prefix
        roots = read_pem(self.ca_file, f"{prefix}TLS_CA_FILE")
        if self.cert_file is None or self.key_file is None:
            return grpc.ssl_channel_credentials(root_certificates=roots)
        return grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=read_pem(self.key_file, f"{prefix}TLS_KEY_FILE"),
            certificate_chain=read_pem(self.cert_file, f"{prefix}TLS_CERT_FILE"),
        )

    def options(self) -> list[tuple[str, str]]:
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def check_files(prefix: str, **files: Path | None) -> None:
    """Fail at start, naming the setting, when a certificate or key file is named but is not
    a readable PEM file, or a certificate comes without its key (or a key without one)."""
    if (files.get("cert_file") is None) != (files.get("key_file") is None):
        raise ValueError(
            f"{prefix}TLS_CERT_FILE and {prefix}TLS_KEY_FILE are given together or not at all"
        )
    for name, path in files.items():
        if path is not None:
            read_pem(path, f"{prefix}TLS_{name.upper()}")
