from __future__ import annotations

import pytest

from crimes.etl import synthetic
from crimes.etl.extract import ExtractError, extract
from crimes.etl.preprocess import preprocess
from crimes.etl.settings import EtlSettings


def test_the_synthetic_sample_is_labelled_and_fits_the_contract() -> None:
    extracted = extract(EtlSettings(source="synthetic:500", year=2023, source_allow_synthetic=True))
    assert (extracted.rows, extracted.fmt, extracted.source) == (500, "synthetic", "synthetic:500")
    assert extracted.frame["block"].str.contains(synthetic.SYNTHETIC_MARK).all()
    assert set(extracted.frame["year"]) == {"2023"}
    features, report = preprocess(extracted.frame)
    assert report.dropped == {}
    assert len(features) == 500


@pytest.mark.parametrize("source", ["synthetic:many", "synthetic:0"])
def test_bad_synthetic_sources_are_clear(source: str) -> None:
    with pytest.raises(ExtractError, match="bad synthetic source"):
        extract(EtlSettings(source=source, source_allow_synthetic=True))
