"""The embedded farm (``edgefarm up``): API, a worker and two emulated phones on one machine
(three with the arm64 one, whose programs run under qemu-user, where this machine has the tools).

Nothing to install or start besides ``pip install``: the database is a SQLite file and Celery
runs over kombu's SQLAlchemy transport in another SQLite file, both under ``EDGEFARM_HOME``,
together with the phones' sandboxes, the API token (``config/api-token``) and ``farm.json``,
which tells every other ``edgefarm`` command with the same ``EDGEFARM_HOME`` where the farm is.

The API (uvicorn) and the worker host (``python -m workers worker``, itself the supervisor of a
Celery worker per phone, one for compiles and beat) run as child processes — ``harness``
imports neither ``api`` nor ``workers`` — and the emulated phones run in this process. Both
children are supervised (:mod:`harness.supervise`): one that dies is restarted with backoff and
the rest of the farm goes on. The phones keep their ports (and, by their serials, their device
rows) from one ``edgefarm up`` to the next.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness.config import get_settings
from harness.errors import InfrastructureError
from harness.supervise import Child, Supervisor

log = logging.getLogger(__name__)

DEFAULT_PROFILES = ("dimensity-9200", "snapdragon-8-gen-2")
# The phone whose programs are aarch64 binaries (run under qemu-user on an x86-64 machine).
ARM64_PROFILE = "dimensity-9200-arm64"
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
    arm64: bool = False  # one more phone, ARM64_PROFILE (see arm64_missing)
    with_local_device: bool = True
    phones: list[Any] = field(default_factory=list)
    supervisor: Supervisor | None = None

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

        ports = _phone_ports()
        addresses = []
        kept: dict[str, int] = {}
        profiles = (*self.profiles, ARM64_PROFILE) if self.arm64 else self.profiles
        for name, profile in phone_names(profiles):
            # Each phone keeps its sandbox (and so its serial) and, when free, its port.
            phone = EmulatedPhone(
                profile,
                root=home / "phones" / name,
                port=_free_port(ports.get(name)),
                isolation=settings.emulator_isolation,
            ).start()
            self.phones.append(phone)
            kept[name] = phone.port
            addresses.append(f"tcp:127.0.0.1:{phone.port}")
        _keep_phone_ports(kept)
        if self.with_local_device:
            addresses.append("local")

        env = self._env()
        logs = home / "logs"
        device_args = [arg for address in addresses for arg in ("--device", address)]
        api = [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:create_app",
            "--factory",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        self.supervisor = Supervisor(
            [
                Child(
                    "worker",
                    [sys.executable, "-m", "workers", "worker", *device_args, "--beat"],
                    env=env,
                    cwd=REPO_ROOT,
                    log_path=logs / "worker.log",
                ),
                Child("api", api, env=env, cwd=REPO_ROOT, log_path=logs / "api.log"),
            ],
            restart_limit=settings.worker_restart_limit,
            restart_window_s=settings.worker_restart_window_s,
            backoff_max_s=settings.worker_restart_backoff_max_s,
        )
        self.supervisor.start()
        farm_file().write_text(
            json.dumps(
                {
                    "api_url": self.url,
                    "pid": os.getpid(),
                    "devices": addresses,
                    "phone_ports": kept,
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=2,
            )
        )

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
                # 503 is an answer: runs left waiting from before may have no worker yet.
                if health.status_code in (200, 503) and devices.status_code == 200:
                    body = devices.json()
                    rows = body["data"] if isinstance(body, dict) else body
                    ready = [
                        d
                        for d in rows
                        if d.get("health") == "good" and (d.get("liveness") or {}).get("alive")
                    ]
                    if len(ready) >= expected:
                        return
                    problem = f"{len(ready)} of {expected} devices have a live worker"
                else:
                    problem = f"healthz {health.status_code}: {health.text[:200]}"
            except httpx.HTTPError as exc:
                problem = str(exc)
            time.sleep(0.5)
        raise InfrastructureError(f"the farm did not come up within {timeout_s:.0f} s: {problem}")

    def check_children(self) -> None:
        """Restart children that died (after their backoff); an InfrastructureError when one
        was given up on (it kept dying: its log says why)."""
        if self.supervisor is None:
            return
        self.supervisor.poll()
        for child in self.supervisor.children:
            if child.given_up is not None:
                tail = ""
                if child.log_path is not None and child.log_path.exists():
                    lines = child.log_path.read_text(errors="replace").strip().splitlines()
                    tail = " | ".join(lines[-3:])
                raise InfrastructureError(
                    f"the {child.name} {child.given_up}: {tail} (log: {child.log_path})"
                )

    def stop(self) -> None:
        from harness.client import farm_file

        if self.supervisor is not None:
            self.supervisor.stop()
        for phone in self.phones:
            phone.stop()
        try:
            if json.loads(farm_file().read_text()).get("pid") == os.getpid():
                farm_file().unlink()
        except (OSError, ValueError):
            pass

    def serve_forever(self) -> None:
        """Block until SIGINT/SIGTERM, restarting children that die; an InfrastructureError
        when one keeps dying."""
        stop = False

        def _stop(_signum: int, _frame: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not stop:
            self.check_children()
            time.sleep(0.2)


def phone_names(profiles: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, profile) of each phone: the profile's name, ``-2``, ``-3`` ... for repeats."""
    seen: dict[str, int] = {}
    names = []
    for profile in profiles:
        seen[profile] = seen.get(profile, 0) + 1
        names.append((profile if seen[profile] == 1 else f"{profile}-{seen[profile]}", profile))
    return names


def arm64_missing() -> list[str]:
    """What this machine lacks for the arm64 emulated phone (qemu-user to run its programs,
    the aarch64 cross compiler to build them), each naming its Debian package; empty when it
    can have one."""
    from harness.devices.emulator.isa import ARM64, missing_tools
    from harness.toolchain import AARCH64_LINUX_GNU

    missing = missing_tools(ARM64)
    compilers = AARCH64_LINUX_GNU.missing()
    if compilers is not None:
        missing.append(compilers)
    return missing


def profiles_for(count: int) -> tuple[str, ...]:
    """``count`` phones: the default profiles first, then the others, in turn."""
    from harness.devices.emulator.profiles import PROFILES

    order = [*DEFAULT_PROFILES, *(p for p in sorted(PROFILES) if p not in DEFAULT_PROFILES)]
    return tuple(order[i % len(order)] for i in range(count))


def _ports_file() -> Path:
    return get_settings().home / "phones" / "ports.json"


def _phone_ports() -> dict[str, int]:
    """The ports the emulated phones had last time (kept across restarts, so that an ADB
    client connected to them before finds them again)."""
    try:
        ports = json.loads(_ports_file().read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in ports.items()} if isinstance(ports, dict) else {}


def _keep_phone_ports(ports: dict[str, int]) -> None:
    path = _ports_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ports, indent=2) + "\n")
