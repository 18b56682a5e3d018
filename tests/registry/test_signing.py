"""The training's signature on a form (crimes.registry.signing): it verifies only for the
statement it was made on, with the matching key."""

from __future__ import annotations

import pytest

from crimes.registry import signing

STATEMENT = signing.Statement("dtc_model_prod", "run-1", "ab" * 32, "tf-0123456789abcdef")


def test_a_signature_verifies_for_its_statement_only() -> None:
    private, public = signing.new_pair()
    signature = signing.sign(signing.private_key(private), STATEMENT)
    signing.verify(signing.public_key(public), STATEMENT, signature)
    for changed in (
        signing.Statement("lda_model_prod", "run-1", "ab" * 32, "tf-0123456789abcdef"),
        signing.Statement("dtc_model_prod", "run-2", "ab" * 32, "tf-0123456789abcdef"),
        signing.Statement("dtc_model_prod", "run-1", "cd" * 32, "tf-0123456789abcdef"),
        signing.Statement("dtc_model_prod", "run-1", "ab" * 32, "tf-fedcba9876543210"),
    ):
        with pytest.raises(signing.SignatureRefused, match="does not verify"):
            signing.verify(signing.public_key(public), changed, signature)
    _, other = signing.new_pair()
    with pytest.raises(signing.SignatureRefused, match="does not verify"):
        signing.verify(signing.public_key(other), STATEMENT, signature)


def test_missing_or_garbled_signatures_and_keys_are_refused_clearly() -> None:
    _, public = signing.new_pair()
    with pytest.raises(signing.SignatureRefused, match="has no 'onnx_signature' tag"):
        signing.verify(signing.public_key(public), STATEMENT, None)
    with pytest.raises(signing.SignatureRefused, match="does not verify"):
        signing.verify(signing.public_key(public), STATEMENT, "not base64 !")
    with pytest.raises(signing.BadKey, match="not base64"):
        signing.public_key("not a key !")
    with pytest.raises(signing.BadKey, match="32 bytes"):
        signing.public_key("AAAA")
    with pytest.raises(signing.SignatureRefused, match="one non-empty line"):
        signing.Statement("dtc\nlda", "run", "ab", "tf").encode()
