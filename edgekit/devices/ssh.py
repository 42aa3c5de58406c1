"""ssh://user@host:port with asyncssh: commands over exec channels, files over SFTP, host keys checked by default."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import shlex
import warnings
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from edgekit.devices.registry import Device
from edgekit.devices.transport import Completed, Transport
from edgekit.errors import MissingBackend, UserError, gist

HANDSHAKE = "the SSH handshake"


def _asyncssh():
    try:
        with warnings.catch_warnings():  # its DSA support warns on import with newer cryptography releases
            warnings.simplefilter("ignore")
            import asyncssh
    except ImportError:
        raise MissingBackend("asyncssh", "remote", "ssh:// devices") from None
    return asyncssh


class SshTransport(Transport):
    """One SSH connection for the link's lifetime, driven from its own event loop."""

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self.asyncssh = _asyncssh()
        self.where = f"{device.address}:{device.port or 22}"
        for name, path in (("key", device.key), ("known_hosts", device.known_hosts)):
            if path is not None and not path.is_file():
                fix = " (or known_hosts: none to skip the host key check)" if name == "known_hosts" else ""
                raise UserError(f"device {device.label}: {name} file {path} not found{fix}")
        self.loop = asyncio.new_event_loop()
        try:
            self.connection = self._wait(self._connect(), HANDSHAKE, device.connect_timeout_s)
        except BaseException:
            self.loop.close()
            raise

    async def _connect(self) -> Any:
        device = self.device
        return await self.asyncssh.connect(
            device.address, device.port or (), username=device.user or (),
            client_keys=[str(device.key)] if device.key else (),
            known_hosts=str(device.known_hosts) if device.known_hosts else None,
            connect_timeout=device.connect_timeout_s)

    def run(self, argv: Sequence[str], what: str) -> Completed:
        return self._wait(self._run(shlex.join(argv)), what, self.device.timeout_s)

    async def _run(self, command: str) -> Completed:
        process = await self.connection.create_process(command, stdin=self.asyncssh.DEVNULL, errors="replace")
        try:
            done = await process.wait()
        finally:
            if process.exit_status is None and process.exit_signal is None:  # given up on: stop it there
                with contextlib.suppress(self.asyncssh.Error, OSError):
                    process.kill()
                process.close()
        if done.returncode is None:  # neither an exit status nor a signal: the channel went with the connection
            raise self.asyncssh.ConnectionLost("the session ended without an exit status")
        return Completed(done.returncode, done.stdout or "", done.stderr or "")

    def upload(self, files: Sequence[tuple[Path, str]]) -> None:
        self._wait(self._upload(files), "the upload", self.device.timeout_s)

    async def _upload(self, files: Sequence[tuple[Path, str]]) -> None:
        async with self.connection.start_sftp_client() as sftp:
            for local, remote in files:
                await sftp.makedirs(posixpath.dirname(remote), exist_ok=True)
                await sftp.put(str(local), remote)

    def close(self) -> None:
        try:
            self.connection.close()
            self.loop.run_until_complete(asyncio.wait_for(self.connection.wait_closed(), self.device.connect_timeout_s))
        except (OSError, TimeoutError, self.asyncssh.Error):
            pass  # the link is gone either way
        finally:
            self.loop.close()

    def _wait(self, step: Coroutine[Any, Any, Any], what: str, timeout: float) -> Any:
        """Run `step` to its end within `timeout`; any way it fails to reach the device is one UserError."""
        asyncssh = self.asyncssh
        device, where = self.device, self.where
        prefix = f"device {device.label}"
        try:
            return self.loop.run_until_complete(asyncio.wait_for(step, timeout))
        except asyncssh.HostKeyNotVerifiable as error:
            raise UserError(f"{prefix}: the host key of {where} does not verify against {device.known_hosts} "
                            f"({gist(error)}); add the device's key there (ssh-keyscan -p {device.port or 22} "
                            f"{device.address} >> {device.known_hosts}) or set known_hosts: none to skip the check") from None
        except asyncssh.PermissionDenied:
            raise UserError(f"{prefix}: authentication failed for user {device.user or '(yours)'} with "
                            f"{device.key or 'your default keys and agent'}") from None
        except ConnectionRefusedError:
            raise UserError(f"{prefix}: connection refused by {where} (no SSH server listening there)") from None
        except TimeoutError:
            if what == HANDSHAKE:
                raise UserError(f"{prefix}: no SSH answer from {where} within {timeout:g} s (connect_timeout_s)") from None
            raise UserError(f"{prefix}: {what} did not finish within {timeout:g} s (timeout_s)") from None
        except asyncssh.KeyImportError as error:
            raise UserError(f"{prefix}: cannot use key {device.key}: {gist(error)}") from None
        except asyncssh.DisconnectError as error:
            raise UserError(f"{prefix}: the link to {where} dropped during {what}: {gist(error) or 'disconnected'}") from None
        except asyncssh.SFTPError as error:
            raise UserError(f"{prefix}: the upload failed: {gist(error)}") from None
        except asyncssh.Error as error:
            raise UserError(f"{prefix}: {what} failed: {gist(error)}") from None
        except OSError as error:  # unreachable network, unknown host name, reset connection
            raise UserError(f"{prefix}: cannot reach {where} during {what}: {error.strerror or error}") from None
