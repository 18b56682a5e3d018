"""gRPC core settings that must reach the process before gRPC is first imported.

gRPC core reads `GRPC_EXPERIMENTS` once, when its extension module loads; a value set later is
ignored without a word. So the model service's entry point applies its setting here, before it
imports the server, and the server logs what gRPC core actually got.
"""

from __future__ import annotations

import os
import sys

from crimes.ops.logs import get_logger

log = get_logger("crimes.serving")

VARIABLE = "GRPC_EXPERIMENTS"


def apply_grpc_experiments(experiments: str) -> bool:
    """Hand `experiments` to gRPC core; False (and a warning) when gRPC was imported already."""
    if "grpc" in sys.modules:
        if os.environ.get(VARIABLE, "") != experiments:
            log.warning(
                "server.grpc_experiments_too_late",
                wanted=experiments,
                reason="gRPC was imported before the setting could be applied",
            )
            return False
        return True
    os.environ[VARIABLE] = experiments
    return True
