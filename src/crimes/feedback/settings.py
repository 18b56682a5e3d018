"""Settings of the prediction log (`CRIMES_PREDICTION_LOG_*`): how much it holds in memory,
how often it writes to the data lake, and where it spills when the lake cannot take it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crimes.settings import DEFAULT_STATE_DIR


class PredictionLogSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CRIMES_PREDICTION_LOG_", extra="ignore", validate_by_name=True
    )

    enabled: bool = True
    # A file per served day and model is written every `flush_seconds`, or as soon as this
    # many rows wait: what a SIGKILL can lose is at most `buffer_rows`, usually far less.
    # (Fewer, larger files cost the gateway less: each is one PUT, and its Python is the
    # answers' process's.)
    flush_seconds: float = Field(default=30.0, gt=0, le=3600)
    flush_rows: int = Field(default=250_000, ge=1)
    # Rows held in memory (waiting or being written); beyond it new rows are dropped, counted
    # and logged, never waited for (the log holds the answers in Arrow arrays: about 26 bytes
    # a row of a batch with its keys, about 90 a single request's, whose id is its own).
    buffer_rows: int = Field(default=1_000_000, ge=1)
    # Where files go while the lake cannot take them (uploaded, oldest first, once it can);
    # a persistent volume in the deployments, so that a restart uploads them.
    spill_dir: Path = DEFAULT_STATE_DIR / "prediction-log-spill"
    spill_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    # How far below the answers the writer's thread runs (Linux nice, 0-19): at 19 it takes the
    # CPU the answers leave. A writer starved that way is relieved, once half of `buffer_rows`
    # is held, by a second thread at the answers' priority, so the lowered writer drops no row
    # a writer at 0 would have kept. (Timed against 0 in the same runs, the bench could not
    # tell the two apart: the README's performance table.) 0: one thread, at the answers'.
    writer_nice: int = Field(default=19, ge=0, le=19)
    # How long a graceful stop waits for the last write (lake, or spill).
    stop_seconds: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _buffer_holds_a_flush(self) -> PredictionLogSettings:
        if self.buffer_rows < self.flush_rows:
            raise ValueError(
                "CRIMES_PREDICTION_LOG_BUFFER_ROWS must be at least "
                "CRIMES_PREDICTION_LOG_FLUSH_ROWS"
            )
        return self
