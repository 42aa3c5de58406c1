"""A device fleet on a real multi-node Ray cluster on this machine: a head node (the local CPU) and a second
`ray start` that advertises `device:edge-b`. Measurements for edge-b run on the second node; where the devices file
names edge-b, through the device runner (here a local:// device: this venv's Python)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CNN_INPUT

ray = pytest.importorskip("ray")
RAY = str(Path(sys.executable).parent / "ray")
EDGEKIT = str(Path(sys.executable).parent / "edgekit")
QUIET = ["--disable-usage-stats", "--object-store-memory=100000000", "--num-cpus=1"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """HOST:PORT of a two-node cluster with token authentication (the nodes and this test's driver share a token
    through the environment, as Ray 2.59+ wants). Each node is a `ray start --block` of its own, stopped by
    signalling it: `ray stop` would stop every Ray on the machine, someone else's sweep included."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "token")
        patch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        yield from _two_nodes(address, port)


def _two_nodes(address: str, port: int):
    nodes = []
    try:
        for arguments in (["--head", f"--port={port}", "--include-dashboard=false", '--resources={"device:local": 1}'],
                          [f"--address={address}", '--resources={"device:edge-b": 1}']):
            nodes.append(subprocess.Popen([RAY, "start", "--block", *QUIET, *arguments], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
            _wait_for(address, len(nodes))
        yield address
    finally:
        for node in reversed(nodes):
            os.killpg(node.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started
            node.wait(timeout=120)


def _wait_for(address: str, count: int, timeout_s: float = 120) -> None:
    """Until the cluster at `address` has `count` nodes advertising a device."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(_devices_to_nodes(address)) >= count:
            return
        time.sleep(1)
    raise TimeoutError(f"the Ray cluster at {address} did not reach {count} nodes in {timeout_s:.0f} s")


NODES = """
import json, ray
ray.init(address="{address}", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
print(json.dumps({{k: n["NodeID"] for n in ray.nodes() if n["Alive"] for k in n["Resources"] if k.startswith("device:")}}))
"""


def _devices_to_nodes(address: str) -> dict[str, str]:
    """device:NAME → the id of the node advertising it (Ray reads its token when imported: a fresh process)."""
    done = subprocess.run([sys.executable, "-c", NODES.format(address=address)], capture_output=True, text=True,
                          timeout=120)
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if done.returncode == 0 and lines else {}


def _sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEKIT, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_measurements_go_to_the_node_with_the_device(cluster, cnn_source, cnn_data, tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text(f"devices:\n  edge-b: {{url: 'local://{sys.prefix}', cache_dir: '{tmp_path / 'device-cache'}'}}\n")
    common = ["sweep", f"cnn={cnn_source}", "--targets", "cpu-ort", "--recipes", "fp32,int8", "--calib", str(cnn_data),
              "--input", CNN_INPUT, "--address", cluster, "--runs", "5", "--warmup", "1",
              "--cache-dir", str(tmp_path / "cache"), "--json"]
    result = _sweep(*common, "-o", str(tmp_path / "runs"), "--device", "edge-b", "--device", "local",
                    "--devices", str(devices))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sweep"]["nodes"] == 2 and report["sweep"]["workers"] == 2
    rows = {row["cell"]: row for row in report["rows"]}
    assert set(rows) == {"cnn/cpu-ort/fp32@edge-b", "cnn/cpu-ort/int8@edge-b", "cnn/cpu-ort/fp32", "cnn/cpu-ort/int8"}
    assert all(row["status"] == "ok" for row in rows.values()), [row["reason"] for row in rows.values()]
    nodes = _devices_to_nodes(cluster)
    second, head = nodes["device:edge-b"], nodes["device:local"]
    for cell, row in rows.items():
        if cell.endswith("@edge-b"):  # through the device runner, from the node that has the device
            assert row["measured_on"].startswith("device edge-b") and row["measured_on"].endswith(second[:12])
        else:
            assert row["measured_on"].endswith(f"{head[:12]} CPU")
    assert list((tmp_path / "device-cache").iterdir())  # the runner took the packages
    # without the devices file, edge-b is the second node's own CPU
    result = _sweep(*common, "-o", str(tmp_path / "runs2"), "--device", "edge-b", "--recipes", "fp32")
    assert result.returncode == 0, result.stderr
    assert all(row["measured_on"].endswith(f"{second[:12]} CPU") for row in json.loads(result.stdout)["rows"])
    result = _sweep(*common, "-o", str(tmp_path / "runs3"), "--device", "rpi5")
    assert result.returncode == 1 and "advertises device rpi5" in result.stderr and "edge-b" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
