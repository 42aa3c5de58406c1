"""A real SSH server (asyncssh) on 127.0.0.1 standing in for a device: its logins land in a given venv.

Used by tests/test_devices.py and benchmarks/on_device.py. An exec request runs its command with /bin/sh in a
login-like environment (HOME is the device's home, the device venv first on PATH, nothing of this process's Python
environment); SFTP writes land on the file system. Keys are fresh per server: a host key pinned in its known_hosts,
a client key in its authorized_keys.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import warnings
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # asyncssh's DSA support warns with newer cryptography releases
    import asyncssh

USER = "device"


class DeviceServer:
    """The server in its own thread and event loop, listening on a free port of 127.0.0.1 until `close()`. For tests it
    counts files uploaded (`uploads`) and commands stopped because their client gave up (`killed`), can flip a byte
    of each uploaded .onnx on its way (`corrupt`: a bad link), and drops the connection of the next exec request when
    told to (`drop_next_exec`)."""

    def __init__(self, root: Path, venv_bin: Path) -> None:
        self.root, self.home, self.venv_bin = root, root / "home", venv_bin
        self.home.mkdir()
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key.write_private_key(root / "host_key")
        self.client_key = root / "client_key"
        client = asyncssh.generate_private_key("ssh-ed25519")
        client.write_private_key(self.client_key)
        client.write_public_key(root / "authorized_keys")
        self.uploads, self.killed, self.corrupt, self.drop_next_exec = 0, 0, False, False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.acceptor = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(30)
        self.port = self.acceptor.get_port()
        self.url = f"ssh://{USER}@127.0.0.1:{self.port}"
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_key.export_public_key().decode()}")

    def entry(self, python: Path, /, **fields: Any) -> dict[str, Any]:
        """This server as one device of a devices.yaml: its URL, the device-side python, the client key, the pinned
        host key; `fields` add to or replace those."""
        return {"url": self.url, "python": str(python), "key": str(self.client_key), "known_hosts": str(self.known_hosts),
                **fields}

    async def _listen(self) -> Any:
        server = self

        class UploadSftp(asyncssh.SFTPServer):
            def open(self, path, pflags, attrs):
                handle = super().open(path, pflags, attrs)
                if pflags & asyncssh.FXF_WRITE:
                    server.uploads += 1
                    if server.corrupt and path.endswith(b".onnx"):
                        self.corrupted = getattr(self, "corrupted", set()) | {handle}
                return handle

            def write(self, file_obj, offset, data):
                if offset == 0 and data and file_obj in getattr(self, "corrupted", ()):
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                return super().write(file_obj, offset, data)

        return await asyncssh.listen("127.0.0.1", 0, server_host_keys=[str(self.root / "host_key")],
                                     authorized_client_keys=str(self.root / "authorized_keys"),
                                     process_factory=self._exec, sftp_factory=UploadSftp, encoding=None)

    async def _exec(self, process: Any) -> None:
        if self.drop_next_exec:
            self.drop_next_exec = False
            process.channel.get_connection().abort()
            return
        environment = {"HOME": str(self.home), "PATH": f"{self.venv_bin}:/usr/local/bin:/usr/bin:/bin",
                       "LANG": "C.UTF-8", "USER": USER}
        child = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", process.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=environment, cwd=self.home, start_new_session=True)
        output = asyncio.ensure_future(child.communicate())
        closed = asyncio.ensure_future(process.channel.wait_closed())
        done, _ = await asyncio.wait({output, closed}, return_when=asyncio.FIRST_COMPLETED)
        if output in done:
            stdout, stderr = output.result()
            process.stdout.write(stdout)
            process.stderr.write(stderr)
            process.exit(child.returncode)
        else:  # the client gave up on it: the command goes, as sshd's would when its session ends
            os.killpg(child.pid, signal.SIGKILL)
            await child.wait()
            self.killed += 1
        closed.cancel()

    def close(self) -> None:
        self.acceptor.close()
        asyncio.run_coroutine_threadsafe(self.acceptor.wait_closed(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def __enter__(self) -> DeviceServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
