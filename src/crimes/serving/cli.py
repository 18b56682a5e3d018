"""`crimes serve ...`: the project's services (the model services; the gateway joins this group).

Imports stay inside the commands so `crimes --help` never loads gRPC, MLflow or scikit-learn.
"""

from __future__ import annotations

from typing import Annotated

import typer

serve_app = typer.Typer(help="Run a service of the system.", no_args_is_help=True)

PortOption = Annotated[
    int | None, typer.Option(help="gRPC port (CRIMES_MODEL_PORT; 0 picks a free one).")
]
MetricsPortOption = Annotated[
    int | None, typer.Option(help="Prometheus metrics HTTP port (CRIMES_MODEL_METRICS_PORT).")
]


def _run_model_service(deployment: str, port: int | None, metrics_port: int | None) -> None:
    from pydantic import ValidationError

    from crimes.serving.settings import load_settings
    from crimes.serving.transport import apply_grpc_experiments
    from crimes.settings import describe

    try:
        settings = load_settings(deployment, port=port, metrics_port=metrics_port)
    except ValidationError as error:
        # Settings that cannot serve: one line and exit 2, never a traceback.
        typer.echo(f"crimes serve {deployment}: {describe(error)}", err=True)
        raise typer.Exit(2) from None
    applied = apply_grpc_experiments(settings.grpc_experiments)

    from crimes.serving.server import run

    run(settings, grpc_experiments_applied=applied)


@serve_app.command()
def dtc(port: PortOption = None, metrics_port: MetricsPortOption = None) -> None:
    """The Decision Tree model service (its settings: services/dtc/service.env)."""
    _run_model_service("dtc", port, metrics_port)


@serve_app.command()
def lda(port: PortOption = None, metrics_port: MetricsPortOption = None) -> None:
    """The LDA model service (its settings: services/lda/service.env)."""
    _run_model_service("lda", port, metrics_port)


@serve_app.command("dtc-challenger")
def dtc_challenger(port: PortOption = None, metrics_port: MetricsPortOption = None) -> None:
    """The Decision Tree's challenger (alias `challenger`; services/dtc-challenger/service.env)."""
    _run_model_service("dtc-challenger", port, metrics_port)


@serve_app.command("lda-challenger")
def lda_challenger(port: PortOption = None, metrics_port: MetricsPortOption = None) -> None:
    """The LDA's challenger (alias `challenger`; services/lda-challenger/service.env)."""
    _run_model_service("lda-challenger", port, metrics_port)
