"""The RSA key pair edgefarm authenticates to phones with (adb's ``adbkey`` / ``adbkey.pub``).

Created on first use in the config directory (``$EDGEFARM_HOME/config``) and reused, so a phone
asks its user to allow this farm once.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from harness.errors import InfrastructureError

log = logging.getLogger(__name__)


def load_signer(config_dir: Path) -> Any:
    """A ``PythonRSASigner`` over ``config_dir/adbkey``, generating the key pair if needed."""
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    private = config_dir / "adbkey"
    public = config_dir / "adbkey.pub"
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
        with open(config_dir / ".adbkey.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once make one key
            if not (private.exists() and public.exists()):
                log.info("creating the ADB key pair in %s", config_dir)
                keygen(str(private))
                os.chmod(private, 0o600)
        return PythonRSASigner(public.read_text(), private.read_text())
    except (OSError, ValueError) as exc:
        raise InfrastructureError(
            f"cannot load or create the ADB key in {config_dir}: {exc}"
        ) from None
