"""Settings of the (re)training (`CRIMES_TRAIN_*`): search budget and promotion policy."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingSettings(BaseSettings):
    """The (re)training: search budget, evaluation and promotion policy."""

    model_config = SettingsConfigDict(
        env_prefix="CRIMES_TRAIN_", extra="ignore", validate_by_name=True
    )

    year: int = Field(default=2024, ge=2001, le=2100)
    # Sized so the whole training DAG fits 10 minutes on 2 cores with the full 2024 data.
    trials: int = Field(default=12, ge=1, le=500)
    cv_folds: int = Field(default=3, ge=2, le=10)
    seed: int = 42
    n_jobs: int = Field(default=2, ge=1)
    # The very first version must reach this test weighted F1 to take `champion` (and so must
    # a candidate whose champion cannot be re-scored, beside the champion's recorded F1).
    promotion_floor_f1: float = Field(default=0.95, ge=0, le=1)
    # A version trained on the synthetic sample never takes `champion` but where this allows
    # it (the demo without a portal).
    allow_synthetic_champion: bool = False
    # The Ed25519 key the training signs each version's ONNX form with (registry.signing;
    # base64 of 32 bytes, `crimes signing-key` makes a pair): the model services given its
    # public half load only what the training signed. Unset: forms are not signed.
    signing_key: SecretStr | None = None
    # The champion and the candidate are compared on at least this many rows neither trained on.
    promotion_min_rows: int = Field(default=200, ge=1)
    promotion_attempts: int = Field(default=5, ge=1)
    # Promotion from shadow evidence (`crimes promote --from-shadow`): the challenger needs this
    # many live records shadowed beside the current champion, this share of them agreeing, and
    # an offline F1 on the same held-out rows at least the champion's plus this gain.
    shadow_min_records: int = Field(default=1000, ge=1)
    shadow_min_agreement: float = Field(default=0.9, ge=0, le=1)
    shadow_min_f1_gain: float = Field(default=0.0, ge=-1, le=1)
    # Labelled evidence, preferred when there is enough of it: at least this many shadowed
    # records whose FBI code the portal has published since, on which the challenger's
    # realized accuracy is at least the champion's plus this gain (then neither agreement nor
    # offline F1 is asked: they stand in for what the labels say).
    shadow_min_labelled: int = Field(default=500, ge=1)
    shadow_min_accuracy_gain: float = Field(default=0.0, ge=-1, le=1)
