"""`crimes`: the project's user-facing jobs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from crimes.lake import layout
from crimes.local.stack_cli import app as stack_app
from crimes.serving.cli import serve_app
from crimes.settings import describe

S = TypeVar("S", bound=BaseSettings)

app = typer.Typer(
    help="Chicago crimes: FBI code prediction (ETL, training, serving).", no_args_is_help=True
)
app.add_typer(stack_app, name="stack", help="The local stack: object store, MLflow, databases.")
app.add_typer(
    serve_app, name="serve", help="Run a service: the model services (gRPC) or the gateway."
)


@serve_app.command("gateway")
def serve_gateway(
    port: Annotated[int | None, typer.Option(help="HTTP port (CRIMES_GATEWAY_PORT).")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (CRIMES_GATEWAY_HOST).")] = None,
) -> None:
    """The REST gateway (port in services/gateway/service.env): validates, transforms once,
    asks both model services."""
    from crimes.gateway.server import run
    from crimes.gateway.settings import NoApiKey, load_settings, refuse_without_key

    try:
        settings = load_settings(port=port, host=host)
        refuse_without_key(settings)
    except (ValidationError, NoApiKey) as error:
        _fail("serve gateway", error, code=BAD_INPUT)
    run(settings)


# A user's mistake (a file that is not crime data, a missing column): this exit status.
BAD_INPUT = 2


def _fail(command: str, error: BaseException, code: int) -> NoReturn:
    """One clear line on stderr and a non-zero exit: never a traceback for a user's mistake."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, ValidationError):
        message = describe(error)
    typer.echo(f"crimes {command}: {message}", err=True)
    raise typer.Exit(code)


probe_app = typer.Typer(help="Health probes (exit 0 when healthy), for containers.")
app.add_typer(probe_app, name="probe")


@probe_app.command("grpc")
def probe_grpc(
    address: Annotated[str, typer.Argument(help="host:port of the gRPC server.")],
    service: Annotated[str, typer.Option(help="Health service name ('' = whole server).")] = "",
) -> None:
    """Standard grpc.health.v1 check."""
    from crimes.ops.probe import grpc_serving

    healthy, status = grpc_serving(address, service)
    typer.echo(status)
    raise typer.Exit(0 if healthy else 1)


@probe_app.command("model-service")
def probe_model_service(
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Alive (model or not: before the first training too) instead of serving.",
        ),
    ] = False,
) -> None:
    """grpc.health.v1 check of this container's model service, at the port and for the model
    its settings name (CRIMES_MODEL_*, as the service itself reads them); with --live, its
    liveness."""

    from crimes.ops.probe import grpc_serving
    from crimes.ops.tls import TlsSettingsError
    from crimes.serving.health import LIVENESS
    from crimes.serving.settings import ServiceAddress

    try:
        settings = ServiceAddress()  # type: ignore[call-arg]  # from the environment
    except ValidationError as error:
        names = ", ".join(f"CRIMES_MODEL_{str(e['loc'][0]).upper()}" for e in error.errors())
        typer.echo(f"cannot probe: {names} not set or invalid", err=True)
        raise typer.Exit(1) from None
    try:
        healthy, status = grpc_serving(
            f"127.0.0.1:{settings.port}",
            LIVENESS if live else settings.name,
            tls=settings.client_tls,
        )
    except TlsSettingsError as error:
        typer.echo(f"cannot probe: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(status)
    raise typer.Exit(0 if healthy else 1)


@probe_app.command("gateway")
def probe_gateway() -> None:
    """The gateway's liveness, at the port its settings name (CRIMES_GATEWAY_PORT)."""
    from crimes.gateway.settings import load_settings
    from crimes.ops.probe import http_ok

    healthy, status = http_ok(f"http://127.0.0.1:{load_settings().port}/health/live")
    typer.echo(status)
    raise typer.Exit(0 if healthy else 1)


@probe_app.command("http")
def probe_http(url: Annotated[str, typer.Argument(help="URL that must answer 200.")]) -> None:
    """HTTP GET that must answer 200."""
    from crimes.ops.probe import http_ok

    healthy, status = http_ok(url)
    typer.echo(status)
    raise typer.Exit(0 if healthy else 1)


@app.command("signing-key")
def signing_key() -> None:
    """A new Ed25519 key pair for the ONNX forms' signatures (registry.signing): the signing
    key goes to the training alone (CRIMES_TRAIN_SIGNING_KEY), the verify key to the model
    services (CRIMES_MODEL_VERIFY_KEY). Printed as two environment lines."""
    from crimes.registry.signing import new_pair

    private, public = new_pair()
    typer.echo(f"CRIMES_TRAIN_SIGNING_KEY={private}")
    typer.echo(f"CRIMES_MODEL_VERIFY_KEY={public}")


airflow_app = typer.Typer(help="Airflow's parts, as this project runs them.")
app.add_typer(airflow_app, name="airflow")


@airflow_app.command("api-server")
def airflow_api_server(
    port: Annotated[int, typer.Option(help="The API server's port.")] = 8080,
) -> None:
    """Airflow's API server, its admin's password the environment's (AIRFLOW_ADMIN_PASSWORD)
    rather than one Airflow makes up at its first start."""
    from crimes.orchestration.airflow_admin import NoAdminPassword, write_admin_password

    try:
        write_admin_password(os.environ)
    except (NoAdminPassword, OSError) as error:
        _fail("airflow api-server", error, code=BAD_INPUT)
    airflow = str(Path(sys.executable).with_name("airflow"))
    # Replaced by Airflow's own process (its signals, its exit code), no shell in between.
    os.execv(airflow, [airflow, "api-server", "--port", str(port)])  # noqa: S606


object_store_app = typer.Typer(
    help="The object store's identities and buckets (SeaweedFS), for its start-up jobs."
)
app.add_typer(object_store_app, name="object-store")


def _from_environment(command: str, settings: type[S]) -> S:
    try:
        return settings()
    except ValidationError as error:
        _fail(command, error, code=BAD_INPUT)


@object_store_app.command("config")
def object_store_config(
    # Not checked by click: a file of a previous start belongs to SeaweedFS' user, and this job
    # replaces it without reading it.
    path: Annotated[
        Path,
        typer.Argument(help="Where to write SeaweedFS' -s3.config file.", readable=False),
    ],
    owner: Annotated[
        str | None, typer.Option(help="uid:gid to hand the file to (the server's user).")
    ] = None,
) -> None:
    """Write the identities file of SeaweedFS from the environment's keys (owner-only)."""
    from crimes.lake.object_store import ObjectStoreIdentities, write_seaweedfs_config

    identities = _from_environment("object-store config", ObjectStoreIdentities)
    ids: tuple[int, int] | None = None
    if owner is not None:
        uid, sep, gid = owner.partition(":")
        if not (sep and uid.isdigit() and gid.isdigit()):
            _fail("object-store config", ValueError(f"--owner must be uid:gid, got {owner!r}"), 2)
        ids = (int(uid), int(gid))
    try:
        write_seaweedfs_config(identities, path, ids)
    except OSError as error:
        _fail("object-store config", error, code=1)
    typer.echo(f"wrote {len(identities.identities())} identities to {path}")


@object_store_app.command("buckets")
def object_store_buckets(
    endpoint: Annotated[str, typer.Option(help="The S3 endpoint, e.g. http://seaweedfs:8333.")],
    wait: Annotated[float, typer.Option(help="Seconds to keep retrying while it starts.")] = 60,
) -> None:
    """Create the project's buckets that are missing, as the admin identity (idempotent)."""
    import time

    from crimes.lake.object_store import BUCKETS, ObjectStoreAdmin, ensure_buckets

    admin = _from_environment("object-store buckets", ObjectStoreAdmin)
    deadline = time.monotonic() + wait
    while True:
        try:
            created = ensure_buckets(endpoint, admin)
            break
        except Exception as error:  # not up yet, or refused: one line once the wait is over
            if time.monotonic() >= deadline:
                _fail("object-store buckets", error, code=1)
            time.sleep(1)
    typer.echo(f"buckets {', '.join(BUCKETS)} present; created: {', '.join(created) or 'none'}")


@app.command()
def etl(
    source: Annotated[
        str | None,
        typer.Option(help="Socrata API base URL or a local CSV/JSON/Parquet file (CRIMES_SOURCE)."),
    ] = None,
    year: Annotated[int | None, typer.Option(help="Year of the crimes (CRIMES_YEAR).")] = None,
) -> None:
    """Extract, preprocess, split and transform one year of crimes into the data lake."""

    from crimes.contract import SchemaError
    from crimes.etl.extract import ExtractError, SourceUnreachable
    from crimes.etl.pipeline import EtlError, run_etl
    from crimes.etl.settings import EtlSettings
    from crimes.etl.source_policy import SourceRefused
    from crimes.lake.storage import Lake, LakeError

    overrides: dict[str, object] = {}
    if source:
        overrides["source"] = source
    if year:
        overrides["year"] = year
    try:
        settings = EtlSettings(**overrides)  # type: ignore[arg-type]
        lake = Lake()
        manifest = run_etl(settings, lake)
    except SourceUnreachable as error:
        _fail("etl", error, code=1)
    except (ExtractError, SourceRefused, SchemaError, EtlError, ValidationError) as error:
        _fail("etl", error, code=BAD_INPUT)
    except LakeError as error:
        _fail("etl", error, code=1)
    except Exception as error:  # MLflow unreachable, say: still one line, never a traceback
        _fail("etl", error, code=1)

    summary = {
        "manifest": lake.url(layout.pointer_key(settings.year)),
        "dataset": manifest["dataset"],
        "transformation_version": manifest["transformation_version"],
        "etl_run_id": manifest["etl_run_id"],
        "rows": manifest["rows"],
        "final": lake.url(layout.final_prefix(settings.year, manifest["dataset"])),
        "data_info": lake.url(layout.data_info_prefix(settings.year, manifest["dataset"])),
    }
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def train(
    trials: Annotated[
        int | None, typer.Option(help="Optuna trials for the Decision Tree (CRIMES_TRAIN_TRIALS).")
    ] = None,
    cv_folds: Annotated[
        int | None, typer.Option(help="Stratified CV folds (CRIMES_TRAIN_CV_FOLDS).")
    ] = None,
    year: Annotated[int | None, typer.Option(help="Year of the published data.")] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Train only these models: dtc, lda (repeatable).")
    ] = None,
) -> None:
    """Train, evaluate, register and promote the models on the published data (no Airflow)."""
    from crimes.training.pipeline import KINDS, run_training
    from crimes.training.settings import TrainingSettings

    overrides: dict[str, Any] = {
        k: v for k, v in {"trials": trials, "cv_folds": cv_folds, "year": year}.items() if v
    }
    settings = TrainingSettings(**overrides)
    kinds = tuple(model) if model else KINDS
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}: expected {list(KINDS)}")

    def report(line: str) -> None:
        typer.echo(line, err=True)

    if "dtc" in kinds:
        typer.echo(f"dtc: Optuna search, {settings.trials} trials", err=True)
    try:
        summaries = run_training(settings, kinds, report=report)
    except Exception as error:  # nothing published yet, MLflow unreachable: one line
        _fail("train", error, code=1)
    typer.echo(json.dumps([s.as_dict() for s in summaries], indent=2, default=str))


@app.command()
def sample(
    year: Annotated[int, typer.Option(help="Year of the published data.")] = 2024,
    seed: Annotated[int | None, typer.Option(help="Pick reproducibly.")] = None,
) -> None:
    """A random real record of the published test split as a ready `/predict` body (stdout),
    with its true FBI code (stderr): `crimes sample | curl -d @- ...`."""
    import random

    from crimes import contract
    from crimes.lake import datasets, storage
    from crimes.lake.storage import Lake

    lake = Lake()
    final = datasets.current_manifest(lake, year)["files"]["final"]
    rows = storage.read_parquet_bytes(storage.read_file(lake, final["features_test.parquet"]))
    targets = storage.read_parquet_bytes(storage.read_file(lake, final["y_test.parquet"]))
    index = random.Random(seed).randrange(len(rows))
    # Through JSON, as a client sends it: plain types, null for a missing coordinate.
    record = json.loads(rows.iloc[[index]].to_json(orient="records"))[0]
    body = contract.CrimeFeatures.model_validate(record).model_dump()
    typer.echo(json.dumps({"features": body}))
    typer.echo(f"true fbi_code: {targets.iloc[index, 0]!s}", err=True)


# The running gateway the monitoring commands read.
GatewayUrl = Annotated[
    str | None, typer.Option(help="The gateway's URL (CRIMES_MONITOR_GATEWAY_URL).")
]


@app.command()
def drift(
    gateway: GatewayUrl = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="PSI that calls for a retrain (CRIMES_MONITOR_DRIFT_THRESHOLD)."),
    ] = None,
) -> None:
    """Per served model version: its window of served records and each feature's PSI against
    its training split (exit 3 when a judged feature is above the threshold)."""
    from crimes.orchestration.monitoring import GatewayUnreachable, MonitorSettings, check_drift

    overrides: dict[str, Any] = {"gateway_url": gateway, "drift_threshold": threshold}
    try:
        settings = MonitorSettings(**{k: v for k, v in overrides.items() if v is not None})
        verdict, report = check_drift(settings)
    except ValidationError as error:
        _fail("drift", error, code=BAD_INPUT)
    except GatewayUnreachable as error:
        _fail("drift", error, code=1)
    for line in _drift_table(report, settings.drift_threshold):
        typer.echo(line)
    typer.echo(verdict.reason)
    raise typer.Exit(DRIFTED if verdict.retrain else 0)


# `crimes drift`: a judged feature drifted past the threshold (a script may retrain on it).
DRIFTED = 3


def _drift_table(report: dict[str, Any], threshold: float) -> list[str]:
    lines = []
    for kind, state in sorted(report.items()):
        window = state.get("window")
        head = f"{kind} ({state.get('model')} v{state.get('version')}): {state.get('status')}"
        if window is None:
            lines += [head + (f" - {state['reason']}" if state.get("reason") else ""), ""]
            continue
        lines.append(
            f"{head}, {window['records']}/{window['capacity']} records against "
            f"{window['reference']}"
        )
        if not window["features"]:
            lines += ["  too few records to judge yet", ""]
            continue
        lines.append(f"  {'feature':<22}{'PSI':>9}{'unknown':>10}")
        for item in sorted(window["features"], key=lambda f: -f["psi"]):
            flag = (
                "calendar, not judged"
                if not item["judged"]
                else ("DRIFTED" if item["psi"] > threshold else "")
            )
            lines.append(
                f"  {item['feature']:<22}{item['psi']:>9.4f}{item['unknown_share']:>9.2%}  {flag}"
            )
        lines.append("")
    return lines


@app.command()
def promote(
    from_shadow: Annotated[
        bool,
        typer.Option(
            "--from-shadow",
            help="Judge the challenger on the gateway's shadow evidence and held-out rows.",
        ),
    ] = False,
    model: Annotated[
        list[str] | None, typer.Option(help="Only these models: dtc, lda (repeatable).")
    ] = None,
    gateway: GatewayUrl = None,
    min_records: Annotated[
        int | None, typer.Option(help="Shadow records needed (CRIMES_TRAIN_SHADOW_MIN_RECORDS).")
    ] = None,
    min_agreement: Annotated[
        float | None,
        typer.Option(help="Live agreement needed (CRIMES_TRAIN_SHADOW_MIN_AGREEMENT)."),
    ] = None,
    min_f1_gain: Annotated[
        float | None,
        typer.Option(help="Offline F1 gain over the champion (CRIMES_TRAIN_SHADOW_MIN_F1_GAIN)."),
    ] = None,
) -> None:
    """Promote each model's challenger when its live agreement with the champion and its
    offline F1 on the same held-out rows pass the settings; the decision is tagged on it."""
    import mlflow

    from crimes.lake.storage import Lake
    from crimes.orchestration.monitoring import GatewayUnreachable, MonitorSettings, read_models
    from crimes.settings import tracking_settings
    from crimes.training.pipeline import KINDS
    from crimes.training.promotion import PromotionError
    from crimes.training.settings import TrainingSettings
    from crimes.training.shadow_promotion import evidence_from_gateway, promote_from_shadow

    if not from_shadow:
        _fail("promote", ValueError("say where the evidence comes from: --from-shadow"), BAD_INPUT)
    kinds = tuple(model) if model else KINDS
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        _fail("promote", ValueError(f"unknown model(s) {unknown}: expected {list(KINDS)}"), 2)
    policy: dict[str, Any] = {
        "shadow_min_records": min_records,
        "shadow_min_agreement": min_agreement,
        "shadow_min_f1_gain": min_f1_gain,
    }
    monitor: dict[str, Any] = {"gateway_url": gateway} if gateway else {}
    try:
        settings = TrainingSettings(**{k: v for k, v in policy.items() if v is not None})
        models = read_models(MonitorSettings(**monitor))
    except ValidationError as error:
        _fail("promote", error, code=BAD_INPUT)
    except GatewayUnreachable as error:
        _fail("promote", error, code=1)
    client = mlflow.MlflowClient(tracking_settings().tracking_uri)
    decisions, refused = [], False
    for kind in kinds:
        try:
            found = evidence_from_gateway(models, kind)
            decision = promote_from_shadow(client, kind, found, settings, Lake())
        except PromotionError as error:
            typer.echo(f"crimes promote: {kind}: {error}", err=True)
            refused = True
            continue
        except Exception as error:  # MLflow or the lake unreachable: one line, never a traceback
            _fail("promote", error, code=1)
        decisions.append(decision.as_dict())
    typer.echo(json.dumps(decisions, indent=2))
    # Nothing could be judged (no challenger, no shadow): a failure; a refusal is a decision.
    raise typer.Exit(1 if refused and not decisions else 0)


def _day(value: str | None, option: str) -> Any:
    import datetime as dt

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        _fail("replay", ValueError(f"{option} must be a date (YYYY-MM-DD), got {value!r}"), 2)


@app.command()
def replay(
    source: Annotated[
        str, typer.Option(help="A portal export (CSV or JSON, gzip or not) or Parquet file.")
    ],
    gateway: GatewayUrl = None,
    since: Annotated[
        str | None, typer.Option(help="Only records that occurred on this day or later.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only records before this day.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Records per call.")] = 500,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many records.")] = None,
) -> None:
    """Send a real portal file's records through the running gateway, in the order they
    occurred, in batches, each with its id and case number (the prediction log keeps them)."""
    from crimes.contract import SchemaError
    from crimes.etl.extract import ExtractError
    from crimes.etl.replay import ReplayError, records_of
    from crimes.etl.replay import replay as send
    from crimes.orchestration.monitoring import MonitorSettings

    first, last = _day(since, "--since"), _day(until, "--until")
    try:
        monitor = MonitorSettings(**({"gateway_url": gateway} if gateway else {}))  # type: ignore[arg-type]
        frame = records_of(source, first, last)
    except (ExtractError, SchemaError, ValidationError, OSError) as error:
        _fail("replay", error, code=BAD_INPUT)
    if limit is not None:
        frame = frame.head(limit)
    key = monitor.gateway_api_key.get_secret_value() if monitor.gateway_api_key else None
    try:
        report = send(frame, monitor.gateway_url, key, batch_size)
    except ReplayError as error:
        _fail("replay", error, code=1)
    typer.echo(json.dumps(report.summary(), indent=2))
    raise typer.Exit(1 if report.failed_batches else 0)


@app.command()
def evaluate(
    lookback_days: Annotated[
        int | None,
        typer.Option(min=1, help="Days of served predictions (CRIMES_EVALUATION_LOOKBACK_DAYS)."),
    ] = None,
) -> None:
    """Join the prediction log with the labels the ETL has published, write the realized
    accuracy per served version to the lake and the registry, and print it."""
    from crimes.feedback.evaluate_served import EvaluationSettings, evaluate_served_predictions
    from crimes.feedback.evaluation import accuracy_table
    from crimes.lake.storage import Lake
    from crimes.settings import tracking_settings

    try:
        given: dict[str, Any] = {"lookback_days": lookback_days} if lookback_days else {}
        settings = EvaluationSettings(**given)
        evaluation = evaluate_served_predictions(Lake(), tracking_settings().tracking_uri, settings)
    except ValidationError as error:
        _fail("evaluate", error, code=BAD_INPUT)
    except Exception as error:  # the lake or MLflow unreachable: one line, never a traceback
        _fail("evaluate", error, code=1)
    for line in accuracy_table(evaluation.versions):
        typer.echo(line)


@app.command("add-onnx")
def add_onnx(
    model: Annotated[str, typer.Argument(help="dtc, lda, or a registered model's name.")],
    version: Annotated[str, typer.Argument(help="The registered version to give an ONNX form.")],
) -> None:
    """Give a version registered before the model services ran ONNX its ONNX form, checked
    label for label on its test split and the reference example, as the training does."""
    from crimes import registry
    from crimes.lake.storage import Lake
    from crimes.settings import tracking_settings
    from crimes.training import onnx_export

    name = registry.MODELS.get(model, model)
    if not version.isdigit():
        _fail("add-onnx", ValueError(f"version must be a number, got {version!r}"), BAD_INPUT)
    try:
        import mlflow

        mlflow.set_tracking_uri(tracking_settings().tracking_uri)
        uri, exported = onnx_export.add_to_version(name, version, Lake())
    except Exception as error:  # unknown version, MLflow or the lake unreachable: one line
        _fail("add-onnx", error, code=1)
    if exported is None:
        typer.echo(f"{name} version {version} already has its ONNX form: {uri}")
        return
    typer.echo(
        f"{name} version {version}: ONNX form {uri} ({exported.datatype}), labels equal on "
        f"{exported.rows_compared} rows"
    )


@app.command()
def retrain(
    source: Annotated[
        str | None, typer.Option(help="Data source for this ETL run (default: as the demo).")
    ] = None,
) -> None:
    """Rerun ETL + training through the running demo's Airflow (the retraining loop)."""
    from crimes.local import demo as demo_job

    demo_job.retrain(typer.echo, source)


@app.command()
def demo() -> None:
    """Start the local stack and run the ETL end to end, printing where the outputs are."""
    from crimes.local import demo as demo_job

    demo_job.run(typer.echo)


if __name__ == "__main__":
    app()
