"""devices.yaml: the machines edgekit reaches by name, checked before any link opens.

```yaml
devices:
  pi5:
    url: ssh://pi@192.168.1.20:22       # or adb://SERIAL, or local://PATH-TO-VENV
    python: /home/pi/edgekit/bin/python  # a Python with `pip install "edgekit[runtime-ort]"` (or another runtime)
    key: ~/.ssh/id_ed25519               # ssh: the client key (default: ssh's own keys and agent)
    known_hosts: ~/.ssh/known_hosts      # ssh: default ~/.ssh/known_hosts; `none` turns host key checking off
    timeout_s: 300                       # each step on the device: a command, an upload
    connect_timeout_s: 10
    cache_dir: ~/.cache/edgekit/device-packages  # on the device, where packages are kept by their manifest's sha256
```

Relative paths (key, known_hosts, a local:// venv) are read from the file's folder. The file is --devices FILE,
else ./devices.yaml, else ~/.config/edgekit/devices.yaml.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from edgekit.errors import UserError
from edgekit.manifest import _control_characters
from edgekit.schema import build, did_you_mean

DEVICES_FILE = "devices.yaml"
NO_HOST_KEY_CHECK = "none"  # `known_hosts: none`
SCHEMES = ("ssh", "adb", "local")


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One device as devices.yaml writes it."""

    url: str
    python: str | None = None  # default: python3 on the device's PATH; for local://VENV, VENV/bin/python
    key: str | None = None
    known_hosts: str | None = None
    timeout_s: float = field(default=300.0, metadata={"range": (1, 86400)})
    connect_timeout_s: float = field(default=10.0, metadata={"range": (1, 600)})
    cache_dir: str | None = None  # on the device; default: the runner's ~/.cache/edgekit/device-packages


@dataclass(frozen=True, slots=True)
class Device:
    """A named device, its URL taken apart, its host-side paths resolved."""

    name: str
    url: str
    scheme: Literal["ssh", "adb", "local"]
    address: str  # ssh: host; adb: serial ('' = the only device attached); local: the venv folder
    python: str
    timeout_s: float
    connect_timeout_s: float
    user: str | None = None
    port: int | None = None
    key: Path | None = None
    known_hosts: Path | None = None  # None: host keys are not checked (`known_hosts: none`)
    cache_dir: str | None = None

    @property
    def label(self) -> str:
        """How messages name it: `pi5 (ssh://pi@192.168.1.20:22)`."""
        return f"{self.name} ({self.url})"


def devices_file(given: str | Path | None, cwd: Path | None = None, home: Path | None = None) -> Path:
    """The devices.yaml to read: `given`, else ./devices.yaml, else ~/.config/edgekit/devices.yaml."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise UserError(f"devices file {path} not found")
        return path
    candidates = ((cwd or Path.cwd()) / DEVICES_FILE, (home or Path.home()) / ".config" / "edgekit" / DEVICES_FILE)
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(f"no devices file: give --devices FILE, or write {candidates[0]} or {candidates[1]} "
                    "(devices: {NAME: {url: ssh://user@host:port, python: /path/to/bin/python}})")


def load_devices(path: Path) -> dict[str, Device]:
    """Every device in the file, checked (a bad URL, an unknown field, a wrong type: one line naming it)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"devices file {path}: not valid YAML{where}: {getattr(error, 'problem', None) or error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"devices file {path}: cannot read it: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict) or set(data) != {"devices"}:
        raise UserError(f"devices file {path}: expected one mapping `devices: {{NAME: {{url: ..., python: ...}}}}`")
    devices = {}
    for name, values in data["devices"].items():
        if not isinstance(name, str) or not name:
            raise UserError(f"devices file {path}: device name {name!r} is not a name")
        entry = build(DeviceEntry, values, f"devices file {path}: device '{name}'")
        escaped = _control_characters({name: asdict(entry)}, "devices")  # names and paths are shown in tables
        if escaped:
            raise UserError(f"devices file {path}: {escaped} holds control characters (terminal escape sequences); "
                            "refused")
        devices[name] = _device(name, entry, path.parent, f"devices file {path}: device '{name}'")
    return devices


def find_device(name: str, given: str | Path | None = None) -> Device:
    """The device called `name` in the devices file (see `devices_file`), with a did-you-mean when there is none."""
    path = devices_file(given)
    devices = load_devices(path)
    if name not in devices:
        known = ", ".join(devices) or "none"
        raise UserError(f"devices file {path}: no device '{name}'{did_you_mean(name, devices)}; known: {known}")
    return devices[name]


def _device(name: str, entry: DeviceEntry, folder: Path, where: str) -> Device:
    scheme, separator, rest = entry.url.partition("://")
    if scheme not in SCHEMES or not separator:
        raise UserError(f"{where}: url {entry.url!r} is not ssh://user@host:port, adb://SERIAL or local://PATH-TO-VENV")
    common = {"name": name, "url": entry.url, "scheme": scheme, "timeout_s": entry.timeout_s,
              "connect_timeout_s": entry.connect_timeout_s, "cache_dir": entry.cache_dir}
    if scheme == "local":
        if not rest:
            raise UserError(f"{where}: url {entry.url!r} names no venv folder (local://PATH-TO-VENV)")
        venv = _resolve(rest, folder)
        python = _resolve(entry.python, folder) if entry.python else venv / "bin" / "python"
        return Device(address=str(venv), python=str(python), **common)
    python = entry.python or "python3"
    if scheme == "adb":
        return Device(address=rest, python=python, **common)
    try:
        parts = urlsplit(entry.url)
        port = parts.port
    except ValueError as error:
        raise UserError(f"{where}: url {entry.url!r}: {error}") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.password:
        raise UserError(f"{where}: url {entry.url!r} is not ssh://user@host:port (no path, query or password)")
    known_hosts = None if entry.known_hosts == NO_HOST_KEY_CHECK else _resolve(
        entry.known_hosts or "~/.ssh/known_hosts", folder)
    return Device(address=parts.hostname, python=python, user=parts.username, port=port,
                  key=_resolve(entry.key, folder) if entry.key else None, known_hosts=known_hosts, **common)


def _resolve(text: str, folder: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else folder / path
