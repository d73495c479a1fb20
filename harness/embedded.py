"""The embedded farm (``edgefarm up``): API, a worker and two emulated phones on one machine.

Nothing to install or start besides ``pip install``: the database is a SQLite file and Celery
runs over kombu's SQLAlchemy transport in another SQLite file, both under ``EDGEFARM_HOME``,
together with the phones' sandboxes, the API token (``config/api-token``) and ``farm.json``,
which tells every other ``edgefarm`` command with the same ``EDGEFARM_HOME`` where the farm is.

The API (uvicorn) and the worker (Celery) run as child processes — ``harness`` imports neither
``api`` nor ``workers`` — and the emulated phones run in this process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness.config import get_settings
from harness.errors import InfrastructureError

log = logging.getLogger(__name__)

DEFAULT_PROFILES = ("dimensity-9200", "snapdragon-8-gen-2")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _free_port(preferred: int | None = None) -> int:
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise InfrastructureError("no free TCP port on 127.0.0.1")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def migrate(database_url: str) -> None:
    """``alembic upgrade head`` on ``database_url``, with the migrations this package carries
    (installed or a checkout alike; see ``harness.db.migrate``)."""
    from harness.db.migrate import upgrade

    upgrade(database_url)


def ensure_token() -> str:
    """The embedded farm's API token: created once, kept in ``config/api-token`` (0600)."""
    from harness.client import token_file
    from harness.db import make_engine, make_session_factory, session_scope
    from harness.farm.tokens import create_token

    path = token_file()
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    engine = make_engine()
    try:
        with session_scope(make_session_factory(engine)) as session:
            token = create_token("edgefarm-up", session=session)
    finally:
        engine.dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(token + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return token


@dataclass
class EmbeddedFarm:
    """Start, watch and stop the embedded farm."""

    port: int = 8000
    profiles: tuple[str, ...] = DEFAULT_PROFILES
    host: str = "127.0.0.1"
    with_local_device: bool = True
    phones: list[Any] = field(default_factory=list)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _env(self) -> dict[str, str]:
        from harness.db import database_url
        from harness.farm.broker import broker_url

        settings = get_settings()
        return {
            **os.environ,
            "EDGEFARM_HOME": str(settings.home),
            "EDGEFARM_DATABASE_URL": database_url(),
            "EDGEFARM_BROKER_URL": broker_url(),
            "EDGEFARM_API_URL": self.url,
        }

    def start(self) -> None:
        from harness.client import farm_file
        from harness.db import database_url
        from harness.devices.emulator import EmulatedPhone

        settings = get_settings()
        home = settings.home
        home.mkdir(parents=True, exist_ok=True)
        previous: dict[str, Any] = {}
        if farm_file().exists():
            previous = json.loads(farm_file().read_text())
            if _pid_alive(int(previous.get("pid", 0))) and previous.get("pid") != os.getpid():
                raise InfrastructureError(
                    f"a farm is already up for EDGEFARM_HOME={home} at {previous.get('api_url')} "
                    f"(pid {previous['pid']}); stop it first"
                )
        migrate(database_url())
        ensure_token()
        (home / "logs").mkdir(exist_ok=True)

        ports = previous.get("phone_ports", {})
        addresses = []
        for profile in self.profiles:
            phone = EmulatedPhone(
                profile,
                root=home / "phones" / profile,
                port=_free_port(ports.get(profile)),
            ).start()
            self.phones.append(phone)
            addresses.append(f"tcp:127.0.0.1:{phone.port}")
        if self.with_local_device:
            addresses.append("local")

        env = self._env()
        device_args = [arg for address in addresses for arg in ("--device", address)]
        self._spawn(
            "worker", [sys.executable, "-m", "workers", "worker", *device_args, "--beat"], env
        )
        self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:create_app",
                "--factory",
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            env,
        )
        farm_file().write_text(
            json.dumps(
                {
                    "api_url": self.url,
                    "pid": os.getpid(),
                    "devices": addresses,
                    "phone_ports": {p.profile.name: p.port for p in self.phones},
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=2,
            )
        )

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        log_path = get_settings().home / "logs" / f"{name}.log"
        with open(log_path, "ab") as log_file:
            self.children[name] = subprocess.Popen(
                cmd,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        log.info("started %s (pid %d), log in %s", name, self.children[name].pid, log_path)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until the API answers /healthz and the worker has registered every device."""
        deadline = time.monotonic() + timeout_s
        expected = len(self.phones) + (1 if self.with_local_device else 0)
        problem = "not started"
        while time.monotonic() < deadline:
            self.check_children()
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=5)
                devices = httpx.get(f"{self.url}/api/v1/devices", timeout=5)
                if health.status_code == 200 and devices.status_code == 200:
                    body = devices.json()
                    rows = body["data"] if isinstance(body, dict) else body
                    good = [d for d in rows if d.get("health") == "good"]
                    if len(good) >= expected:
                        return
                    problem = f"{len(good)} of {expected} devices registered"
                else:
                    problem = f"healthz {health.status_code}: {health.text[:200]}"
            except httpx.HTTPError as exc:
                problem = str(exc)
            time.sleep(0.5)
        raise InfrastructureError(f"the farm did not come up within {timeout_s:.0f} s: {problem}")

    def check_children(self) -> None:
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None:
                log_path = get_settings().home / "logs" / f"{name}.log"
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise InfrastructureError(
                    f"the {name} exited with status {code}: {' | '.join(tail)} (log: {log_path})"
                )

    def stop(self) -> None:
        from harness.client import farm_file

        for proc in self.children.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for phone in self.phones:
            phone.stop()
        try:
            if json.loads(farm_file().read_text()).get("pid") == os.getpid():
                farm_file().unlink()
        except (OSError, ValueError):
            pass

    def serve_forever(self) -> None:
        """Block until SIGINT/SIGTERM or a child dies."""
        stop = False

        def _stop(_signum: int, _frame: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not stop:
            self.check_children()
            time.sleep(0.5)
