"""`crimes stack up|down|status`: the local stack from the command line.

The stack's own modules are imported by the commands that use them: every `crimes` process
builds this command group, a model service's included, and none of them runs the stack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from crimes.local.stack.core import PartStatus

T = TypeVar("T")

app = typer.Typer(help="Start, stop and inspect the local stack (object store, MLflow, database).")


def _print_parts(parts: list[PartStatus]) -> None:
    width = max((len(p.name) for p in parts), default=0)
    for part in parts:
        health = "healthy" if part.healthy else "DOWN"
        pid = f"pid {part.pid}" if part.pid is not None else "-"
        typer.echo(f"{part.name:<{width}}  {health:<7}  {part.address}  {pid}  {part.detail}")


def shell_quote(value: str) -> str:
    """Always single-quoted (shlex.quote leaves plain words bare), safe for any value."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def export_lines(env: dict[str, str]) -> list[str]:
    return [f"export {name}={shell_quote(value)}" for name, value in env.items()]


def _done(what: str, step: Callable[[], T]) -> T:
    """What a stack step gives, or its failure as one line and exit code 1."""
    from crimes.local.stack.procs import StackError

    try:
        return step()
    except StackError as exc:
        typer.echo(f"stack {what} failed: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command("up")
def up_command() -> None:
    """Start every part that is not running and wait until all are healthy."""
    from crimes.local.stack.core import up

    _print_parts(_done("up", up))
    typer.echo('\nFor clients: eval "$(crimes stack status --env)"')


@app.command("down")
def down_command() -> None:
    """Stop every process that `up` started."""
    from crimes.local.stack.core import down

    stopped = _done("down", down)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command("status")
def status_command(
    env: Annotated[
        bool, typer.Option("--env", help="Print `export NAME='value'` lines for clients.")
    ] = False,
) -> None:
    """Show each part, its address and health (exit code 1 when a part is down)."""
    from crimes.local.stack.core import env_exports, status

    if env:
        for line in export_lines(env_exports()):
            typer.echo(line)
        return
    parts = status()
    _print_parts(parts)
    if not all(p.healthy for p in parts):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
