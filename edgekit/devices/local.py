"""local://PATH-TO-VENV: another Python environment on this machine, run as a child process."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from edgekit.devices.transport import Completed, Transport
from edgekit.errors import UserError

HOST_PYTHON_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")  # this environment's, not the device's


class LocalTransport(Transport):
    def run(self, argv: Sequence[str], what: str) -> Completed:
        environment = {key: value for key, value in os.environ.items() if key not in HOST_PYTHON_VARIABLES}
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, errors="replace", env=environment,
                                  timeout=self.device.timeout_s, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise UserError(f"device {self.device.label}: no program {argv[0]}") from None
        except PermissionError:
            raise UserError(f"device {self.device.label}: {argv[0]} is not executable") from None
        except subprocess.TimeoutExpired:
            raise UserError(f"device {self.device.label}: {what} did not finish within {self.device.timeout_s:g} s "
                            "(timeout_s)") from None
        return Completed(done.returncode, done.stdout, done.stderr)

    def upload(self, files: Sequence[tuple[Path, str]]) -> None:
        for local, remote in files:
            target = Path(remote)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)

    def close(self) -> None:
        """Nothing is held open between commands."""
