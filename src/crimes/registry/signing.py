"""The signature on a version's ONNX form: what makes its digest a record a registry writer
cannot change alone.

The digest tag (`onnx_sha256`) lives in the registry, so whoever may write the registry may
register a crafted form with a digest that matches. The training therefore signs, with an
Ed25519 key only it holds (`CRIMES_TRAIN_SIGNING_KEY`), a statement binding the registered
model's name, the version's run, the form's digest and its transformation; a model service
given the public key (`CRIMES_MODEL_VERIFY_KEY`) loads only versions whose statement verifies.
A registry writer without the training's key can change tags and files, never the signature.

Keys travel as base64 of their 32 raw bytes (one environment variable each, like every other
credential of the project); `crimes signing-key` makes a pair.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from crimes.registry import Tag

# Changing what is signed changes this: old signatures then no longer verify, by design.
DOMAIN: Final = b"chicago-crimes onnx form v1"


class SignatureRefused(ValueError):
    """A version whose form's signature is missing or does not verify."""


class BadKey(ValueError):
    """A key setting that is not a base64 Ed25519 key."""


@dataclass(frozen=True)
class Statement:
    """What the training vouches for."""

    name: str
    run_id: str
    onnx_sha256: str
    transformation_version: str

    def encode(self) -> bytes:
        fields = (self.name, self.run_id, self.onnx_sha256, self.transformation_version)
        if any("\n" in f or not f for f in fields):
            raise SignatureRefused(f"cannot sign {fields}: every field is one non-empty line")
        return b"\n".join([DOMAIN, *(f.encode() for f in fields)])


def _raw(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadKey(f"{what} is not base64") from None
    if len(raw) != 32:
        raise BadKey(f"{what} is not an Ed25519 key (32 bytes, base64)")
    return raw


def private_key(text: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_raw(text, "the signing key"))


def public_key(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_raw(text, "the verify key"))


def sign(key: Ed25519PrivateKey, statement: Statement) -> str:
    return base64.b64encode(key.sign(statement.encode())).decode()


def verify(key: Ed25519PublicKey, statement: Statement, signature: str | None) -> None:
    """Returns when `signature` is the training's on `statement`; SignatureRefused otherwise."""
    where = f"models:/{statement.name} (run {statement.run_id})"
    if not signature:
        raise SignatureRefused(
            f"{where}: the version has no '{Tag.ONNX_SIGNATURE}' tag: its form was not signed "
            "by the training"
        )
    try:
        key.verify(base64.b64decode(signature, validate=True), statement.encode())
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureRefused(
            f"{where}: its '{Tag.ONNX_SIGNATURE}' does not verify with the services' key: the "
            "form, its digest or its run were not the ones the training signed"
        ) from None


def new_pair() -> tuple[str, str]:
    """A new (signing key, verify key), base64."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()
