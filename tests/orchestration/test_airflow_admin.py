"""`crimes airflow api-server` writes the admin's password from the environment where Airflow's
simple auth manager reads it, and refuses to start without one (unless login is off)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from crimes.orchestration.airflow_admin import NoAdminPassword, write_admin_password

CRIMES = str(Path(sys.executable).with_name("crimes"))


def test_the_password_file_holds_the_environments_password_for_its_owner_only(
    tmp_path: Path,
) -> None:
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW_ADMIN_PASSWORD": "from-the-environment"}
    (tmp_path / "simple_auth_manager_passwords.json.generated").write_text('{"admin": "made-up"}')
    written = write_admin_password(env)
    assert written == tmp_path / "simple_auth_manager_passwords.json.generated"
    assert json.loads(written.read_text()) == {"admin": "from-the-environment"}
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    elsewhere = tmp_path / "auth" / "passwords.json"
    configured = {**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(elsewhere)}
    assert write_admin_password(configured) == elsewhere


def test_without_a_password_only_a_login_free_deployment_starts(tmp_path: Path) -> None:
    with pytest.raises(NoAdminPassword, match="AIRFLOW_ADMIN_PASSWORD is not set"):
        write_admin_password({"AIRFLOW_HOME": str(tmp_path)})
    login_off = {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    assert write_admin_password(login_off) is None


def test_the_command_refuses_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    done = subprocess.run(
        [CRIMES, "airflow", "api-server", "--port", "1"],
        env={**env, "AIRFLOW_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("crimes airflow api-server: AIRFLOW_ADMIN_PASSWORD is not set")
    assert done.stderr.count("\n") == 1, done.stderr
