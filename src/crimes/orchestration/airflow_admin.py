"""Airflow's admin password, from the deployment's environment (`AIRFLOW_ADMIN_PASSWORD`), not
one Airflow's simple auth manager makes up and prints at its first start: written to the
passwords file that manager reads (and never replaces once a user is in it) before the API
server starts. Where the deployment turns login off (the local tooling: every caller an
admin), no password is needed."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

PASSWORD_VARIABLE: Final = "AIRFLOW_ADMIN_PASSWORD"  # noqa: S105 (a variable's name)
ADMIN: Final = "admin"


class NoAdminPassword(ValueError):
    pass


def passwords_file(env: Mapping[str, str]) -> Path:
    """Where Airflow's simple auth manager reads its users' passwords."""
    configured = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if configured:
        return Path(configured)
    home = Path(env.get("AIRFLOW_HOME", Path.home() / "airflow"))
    return home / "simple_auth_manager_passwords.json.generated"


def write_admin_password(env: Mapping[str, str]) -> Path | None:
    """The passwords file holding the admin's password from the environment; None when login
    is off. Owner-only (0600), replaced atomically."""
    password = env.get(PASSWORD_VARIABLE, "")
    if not password:
        if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
            return None
        raise NoAdminPassword(
            f"{PASSWORD_VARIABLE} is not set: Airflow's API server does not start with a "
            "password of its own making"
        )
    target = passwords_file(env)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(json.dumps({ADMIN: password}) + "\n")
    temporary.replace(target)
    return target
