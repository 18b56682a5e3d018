"""The monitoring configuration: Prometheus's own tool checks the compose configuration and the
rule files, runs the rules' unit tests (monitoring/prometheus/tests.yml), and the scrape jobs
reach the ports the deployments' settings files give the gateway and the model services."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from crimes.local import prometheus
from crimes.settings import deployment_port

MONITORING = prometheus.MONITORING_DIR


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: run scripts/install-system-deps.sh")
    return subprocess.run(
        [tool, *args], cwd=MONITORING, capture_output=True, text=True, check=False, timeout=60
    )


def test_promtool_accepts_the_compose_configuration_and_its_rules() -> None:
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 rule files found" in checked.stdout


def test_the_alert_rules_fire_on_their_unit_tests_series() -> None:
    files = ("tests.yml", "tests-daily.yml")
    tested = promtool("test", "rules", *files)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = yaml.safe_load((MONITORING / "rules" / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = "".join((MONITORING / name).read_text() for name in files)
    # Every alert has a unit test that expects it to fire.
    assert all(f"alertname: {alert}" in tests for alert in alerts), alerts


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: up ==\n")
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_the_scrape_jobs_reach_the_ports_the_deployments_listen_on() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    gateway_port = deployment_port("gateway", "METRICS_PORT")
    assert jobs[prometheus.GATEWAY_JOB]["static_configs"] == [
        {"targets": [f"gateway:{gateway_port}"]}
    ]
    for kind in ("dtc", "lda", "dtc-challenger", "lda-challenger"):
        (discovery,) = jobs[prometheus.model_job(kind)]["dns_sd_configs"]
        # Every replica of the compose service (one A record each), on its metrics port; the
        # challengers too.
        assert discovery["names"] == [kind]
        assert discovery["type"] == "A"
        assert discovery["port"] == deployment_port(kind, "METRICS_PORT")


def test_the_local_configuration_loads_the_same_rules(tmp_path: Path) -> None:
    path = prometheus.write_config(
        tmp_path, {prometheus.GATEWAY_JOB: ["127.0.0.1:1"], "crimes-model-dtc": ["127.0.0.1:2"]}
    )
    checked = promtool("check", "config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 rule files found" in checked.stdout
