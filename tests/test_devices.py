"""Remote devices: bench and verify over a real SSH server on 127.0.0.1 whose logins land in the runtime-only venv,
local:// and adb:// links, devices.yaml, and every way a link fails as one line naming the device."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.bench.harness import measure
from edgekit.bench.machine import cpu_frequency
from edgekit.devices import DeviceLink, bench_on_device, call, find_device, identity, verify_on_device
from edgekit.errors import UserError
from edgekit.isa import host_cpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ssh_loopback import DeviceServer, asyncssh  # noqa: E402

FORBIDDEN_ON_DEVICE = ("torch", "click", "rich", "yaml", "asyncssh", "onnx", "edgekit.cli", "edgekit.devices",
                       "edgekit.compiler")


@pytest.fixture(scope="module")
def device_python(runtime_only_python) -> Path:
    return runtime_only_python


@pytest.fixture(scope="module")
def server(tmp_path_factory, device_python) -> DeviceServer:
    running = DeviceServer(tmp_path_factory.mktemp("ssh"), device_python.parent)
    yield running
    running.close()


def write_devices(path: Path, **devices: dict) -> Path:
    path.write_text(json.dumps({"devices": devices}))  # JSON is YAML
    return path


def ssh_entry(server: DeviceServer, device_python: Path, **fields) -> dict:
    return server.entry(device_python, **fields)


@pytest.fixture()
def devices(tmp_path, server, device_python) -> Path:
    return write_devices(tmp_path / "devices.yaml", pi=ssh_entry(server, device_python, timeout_s=120))


def shape(value):
    """The keys of a nested record, down to its leaves (a list of samples is one leaf)."""
    return {key: shape(inner) for key, inner in value.items()} if isinstance(value, dict) else type(value).__name__


def test_bench_over_ssh_matches_a_local_run_and_names_the_device(server, devices, cnn_package, device_python):
    local = dataclasses.asdict(measure(cnn_package, threads=1, runs=30, warmup=3))
    records, device = bench_on_device([cnn_package], "pi", devices, threads=1, runs=30, warmup=3)
    remote = dataclasses.asdict(records[0])
    assert shape(remote) == shape(local)
    assert remote["package"] == str(cnn_package) and remote["conditions"]["runs"] == 30
    assert remote["conditions"]["cpu"] == host_cpu().model == device["cpu"]["model"]
    assert device["cpu"]["flags"] == list(host_cpu().flags) and device["name"] == "pi"
    assert device["python"]["executable"] == str(device_python)  # the login landed in the runtime-only venv
    assert set(device["runtimes"]) == {"onnxruntime"} and device["memory_mb"] > 100
    here = cpu_frequency()  # the device's governor and clock as bench records them (the current clock moves)
    assert {key: device["cpu_frequency"][key] for key in ("governor", "max_mhz")} == {key: here[key] for key in
                                                                                      ("governor", "max_mhz")}
    assert 0 < remote["latency_ms"]["min"] <= remote["latency_ms"]["p50"] <= remote["latency_ms"]["p99"]


def test_the_package_is_uploaded_once_under_its_manifest_sha(server, devices, cnn_package):
    sha = hashlib.sha256((cnn_package / "manifest.json").read_bytes()).hexdigest()
    copy = server.home / ".cache" / "edgekit" / "device-packages" / sha  # the runner's default cache, in the login's HOME
    shutil.rmtree(copy, ignore_errors=True)  # an earlier test may have sent it
    uploads = server.uploads
    with DeviceLink(find_device("pi", devices)) as link:
        first = link.put(cnn_package)
        [transfer] = link.transfers
    files = sorted(p.name for p in cnn_package.iterdir())
    assert Path(first) == copy and sorted(p.name for p in copy.iterdir()) == files and server.uploads == uploads + len(files)
    assert transfer.uploaded and transfer.bytes == sum(p.stat().st_size for p in cnn_package.iterdir())
    records, _ = bench_on_device([cnn_package], "pi", devices, runs=5, warmup=1)
    assert server.uploads == uploads + len(files) and records[0].latency_ms.p50 > 0  # the second use found it cached
    with DeviceLink(find_device("pi", devices)) as link:
        assert link.put(cnn_package) == first and link.transfers == [dataclasses.replace(transfer, uploaded=False, bytes=0,
                                                                                          seconds=0.0)]
    assert not list(copy.parent.glob(".*.partial-*"))  # no staging folder left behind


def test_a_damaged_device_copy_is_sent_again(server, devices, cnn_package):
    with DeviceLink(find_device("pi", devices)) as link:
        copy = Path(link.put(cnn_package))
    (copy / "model.onnx").write_bytes(b"damaged on the device")
    uploads = server.uploads
    with DeviceLink(find_device("pi", devices)) as link:
        assert link.put(cnn_package) == str(copy) and link.transfers[0].uploaded
    assert server.uploads == uploads + 3 and (copy / "model.onnx").read_bytes() == (cnn_package / "model.onnx").read_bytes()


def test_a_zip_package_goes_as_its_files(server, devices, cnn_package, tmp_path):
    archive = shutil.make_archive(str(tmp_path / "cnn"), "zip", cnn_package)
    result = call("pi", "bench", archive, {"runs": 3, "warmup": 0}, devices)
    sha = hashlib.sha256((cnn_package / "manifest.json").read_bytes()).hexdigest()
    assert result["package"].endswith(sha) and result["target"] == "cpu-ort"


def test_a_tampered_upload_is_refused_by_the_device(server, device_python, cnn_package, tmp_path):
    cache = tmp_path / "device-cache"
    devices = write_devices(tmp_path / "devices.yaml", pi=ssh_entry(server, device_python, cache_dir=str(cache)))
    server.corrupt = True
    try:
        with pytest.raises(UserError, match=r"^device pi \(ssh://device@127\.0\.0\.1:\d+\): the uploaded package was "
                                            r"refused: package .*model\.onnx does not match its sha256"):
            bench_on_device([cnn_package], "pi", devices, runs=3)
    finally:
        server.corrupt = False
    assert list(cache.iterdir()) == []  # neither the damaged copy nor its staging folder stays


def test_verify_over_ssh_runs_the_self_test_there(server, devices, cnn_package):
    from edgekit.verify import verify_package

    result, device = verify_on_device(cnn_package, "pi", devices)
    here = verify_package(cnn_package)
    assert result.ok and result.golden.samples == 4 and result.files == here.files == 2 and device["name"] == "pi"
    assert result.golden.criterion == here.golden.criterion
    assert result.golden.worst["max_rel"] <= 1e-3 and "max_rel <=" in result.golden.criterion


def test_profile_over_ssh(server, devices, cnn_package):
    pytest.importorskip("edgekit.profiling", reason="edgekit.profiling is not written yet")
    from edgekit.profiling import profile_packages

    [profile], device = profile_packages([cnn_package], runs=5, device="pi", devices_file=devices)
    assert profile.available and profile.package == str(cnn_package) and profile.ops and device["name"] == "pi"
    assert profile.conditions["cpu"] == host_cpu().model


def test_link_failures_are_one_line_naming_the_device(server, device_python, tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    silent = socket.socket()  # accepts TCP but never speaks SSH
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    other_key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "other_hosts").write_text(f"[127.0.0.1]:{server.port} {other_key.export_public_key().decode()}")
    other_key.write_private_key(tmp_path / "stranger")
    devices = write_devices(
        tmp_path / "devices.yaml",
        refused=ssh_entry(server, device_python, url=f"ssh://device@127.0.0.1:{refused_port}"),
        silent=ssh_entry(server, device_python, url=f"ssh://device@127.0.0.1:{silent.getsockname()[1]}",
                         connect_timeout_s=1),
        spoofed=ssh_entry(server, device_python, known_hosts=str(tmp_path / "other_hosts")),
        stranger=ssh_entry(server, device_python, key=str(tmp_path / "stranger")),
        nopython=ssh_entry(server, device_python, python="/nonexistent/bin/python"))
    expected = {
        "refused": rf"connection refused by 127\.0\.0\.1:{refused_port} \(no SSH server listening there\)$",
        "silent": r"no SSH answer from 127\.0\.0\.1:\d+ within 1 s \(connect_timeout_s\)$",
        "spoofed": r"the host key of 127\.0\.0\.1:\d+ does not verify against .*other_hosts .*known_hosts: none",
        "stranger": r"authentication failed for user device with .*stranger$",
        "nopython": r"cannot run /nonexistent/bin/python there \(.*\); set `python:` in devices.yaml",
    }
    try:
        for name, pattern in expected.items():
            with pytest.raises(UserError, match=rf"^device {name} \(ssh://device@127\.0\.0\.1:\d+\): {pattern}") as caught:
                identity(name, devices)
            assert "\n" not in str(caught.value)
    finally:
        silent.close()


def test_a_command_past_its_timeout_is_stopped_on_the_device(server, device_python, cnn_package, tmp_path):
    devices = write_devices(tmp_path / "devices.yaml", pi=ssh_entry(server, device_python, timeout_s=2))
    call("pi", "bench", cnn_package, {"runs": 1, "warmup": 0}, devices)  # in the cache: the upload is not timed
    killed = server.killed
    started = time.perf_counter()
    with pytest.raises(UserError, match=r"^device pi \(.*\): 'bench' did not finish within 2 s \(timeout_s\)$"):
        call("pi", "bench", cnn_package, {"runs": 10**8, "warmup": 0}, devices)
    assert time.perf_counter() - started < 10
    deadline = time.monotonic() + 10
    while server.killed == killed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.killed == killed + 1


def test_a_link_dropped_mid_call(server, devices):
    server.drop_next_exec = True
    with pytest.raises(UserError, match=r"^device pi \(.*\): the link to 127\.0\.0\.1:\d+ dropped during 'identity'"):
        identity("pi", devices)


def test_the_runner_reports_a_user_mistake_as_one_line(server, devices, cnn_package):
    with pytest.raises(UserError, match=r"^device pi \(.*\): bench: .*unexpected keyword argument 'repeats'"):
        call("pi", "bench", cnn_package, {"repeats": 3}, devices)


def test_cli_bench_and_verify_on_a_device(server, devices, cnn_package):
    runner = CliRunner()
    from edgekit.cli import main

    done = runner.invoke(main, ["bench", str(cnn_package), "--device", "pi", "--devices", str(devices), "--runs", "5",
                                "--json"])
    assert done.exit_code == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["device"]["cpu"]["model"] == host_cpu().model and row["conditions"]["runs"] == 5
    done = runner.invoke(main, ["bench", str(cnn_package), "--device", "pi", "--devices", str(devices), "--runs", "5"])
    assert done.exit_code == 0 and f"on device pi (ssh://device@127.0.0.1:{server.port})" in done.stdout
    assert "cpu-ort" in done.stdout and host_cpu().model in done.stdout
    done = runner.invoke(main, ["verify", str(cnn_package), "--device", "pi", "--devices", str(devices)])
    assert done.exit_code == 0 and "self-test: 4 samples" in done.stdout and "on device pi" in done.stdout
    done = runner.invoke(main, ["devices", "--devices", str(devices), "--probe", "--json"])
    [listed] = json.loads(done.stdout)
    assert done.exit_code == 0 and listed["name"] == "pi" and listed["identity"]["cpu"]["model"] == host_cpu().model
    done = runner.invoke(main, ["bench", str(cnn_package), "--devices", str(devices)])
    assert done.exit_code == 2 and "--devices FILE goes with --device NAME" in done.stderr
    done = runner.invoke(main, ["bench", str(cnn_package), "--device", "pii", "--devices", str(devices)])
    assert done.exit_code == 1 and done.stderr.strip().splitlines() == [
        f"error: devices file {devices}: no device 'pii' (did you mean 'pi'?); known: pi"]


def test_local_venv_device(cnn_package, device_python, tmp_path):
    venv = device_python.parent.parent
    devices = write_devices(tmp_path / "devices.yaml", venv={"url": f"local://{venv}", "cache_dir": str(tmp_path / "c")})
    records, device = bench_on_device([cnn_package], "venv", devices, runs=5, warmup=1)
    assert device["python"]["executable"] == str(venv / "bin" / "python") and records[0].conditions["runs"] == 5
    assert (tmp_path / "c" / hashlib.sha256((cnn_package / "manifest.json").read_bytes()).hexdigest()).is_dir()


def test_the_runner_imports_no_compile_side_module(cnn_package, tmp_path):
    """Run with this venv's Python, where torch, click, rich and PyYAML are all installed: none may load."""
    commands = [("bench", {"runs": 2, "warmup": 0}), ("verify", {}), ("identity", None)]
    if importlib.util.find_spec("edgekit.profiling") is not None:
        commands.append(("profile", {"runs": 2}))
    for command, options in commands:
        arguments = [str(cnn_package)] if options is not None else []
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgekit.runtime.device", command, *arguments,
                               "--options", json.dumps(options or {})], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        loaded = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
        leaked = sorted(name for name in loaded if any(name == forbidden or name.startswith(f"{forbidden}.")
                                                       for forbidden in FORBIDDEN_ON_DEVICE))
        assert leaked == [], f"{command} imported {leaked}"
        assert "error" not in json.loads(done.stdout.strip().splitlines()[-1])


def test_devices_file_mistakes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(UserError, match=r"^no devices file: give --devices FILE, or write .*devices\.yaml"):
        find_device("pi")
    with pytest.raises(UserError, match=r"^devices file nothing\.yaml not found$"):
        find_device("pi", "nothing.yaml")
    (tmp_path / "devices.yaml").write_text("devices:\n  pi: {url: ssh://a@b:22\n")
    with pytest.raises(UserError, match=r"^devices file .*devices\.yaml: not valid YAML \(line \d+\)"):
        find_device("pi")
    cases = {
        "devices: [pi]": r"expected one mapping `devices:",
        "devices:\n  pi: {url: ssh://a@b, pyhton: /x}": r"device 'pi': unknown parameter 'pyhton' \(did you mean 'python'\?\)",
        "devices:\n  pi: {url: ftp://b}": r"device 'pi': url 'ftp://b' is not ssh://user@host:port, adb://SERIAL",
        "devices:\n  pi: {url: ssh://a@b:99999}": r"device 'pi': url 'ssh://a@b:99999': Port out of range",
        "devices:\n  pi: {url: ssh://a@b, timeout_s: 0}": r"device 'pi': parameter 'timeout_s' = 0 is outside \[1, 86400\]",
        # `edgekit devices` shows names, URLs and paths: a terminal escape in any of them is refused, not printed
        'devices:\n  pi: {url: "ssh://a@b", python: "py\\e[2J"}': r"devices\.pi\.python holds control characters "
                                                                   r"\(terminal escape sequences\); refused$",
        'devices:\n  "pi\\e]0;owned\\a": {url: "adb://R58M"}': r"devices key holds control characters",
    }
    for text, pattern in cases.items():
        (tmp_path / "devices.yaml").write_text(text)
        with pytest.raises(UserError, match=rf"^devices file .*devices\.yaml: {pattern}"):
            find_device("pi")
    (tmp_path / "devices.yaml").write_text("devices:\n  pi: {url: 'ssh://me@host:2222', known_hosts: none, key: k}\n"
                                           "  phone: {url: 'adb://R58M'}\n  venv: {url: 'local://env'}")
    pi = find_device("pi")
    assert (pi.user, pi.address, pi.port, pi.known_hosts, pi.key) == ("me", "host", 2222, None, tmp_path / "k")
    assert find_device("phone").address == "R58M" and find_device("venv").python == str(tmp_path / "env" / "bin" / "python")
    with pytest.raises(UserError, match=r"no device 'phon' \(did you mean 'phone'\?\); known: pi, phone, venv$"):
        find_device("phon")


def test_what_a_device_reports_reaches_the_terminal_escaped():
    """The device's identity is its own text (its /proc/cpuinfo, its os-release): shown, never obeyed as escapes."""
    from edgekit import console

    device = {"name": "pi", "url": "ssh://pi@host:22", "cpu": {"model": "Cortex\x1b[2J-A76", "machine": "aarch64",
                                                               "isa": "armv8.2", "flags": ["asimd", "dotprod"]},
              "cpu_count": 4, "memory_mb": 8192.0, "os": {"name": "Debian\x1b]0;owned\x07 12"},
              "python": {"version": "3.11.2"}, "edgekit": "0.1.0", "runtimes": {"onnxruntime": "1.22.0"}}
    assert console.device_line(device) == ("Cortex\\x1b[2J-A76 (aarch64, ISA armv8.2: asimd dotprod), 4 cores, 8.0 GiB; "
                                           "Debian\\x1b]0;owned\\x07 12; Python 3.11.2, edgekit 0.1.0, onnxruntime 1.22.0")


def adb_serial() -> str:
    """The serial of an attached Android device, else skip with the reason."""
    if shutil.which("adb") is None:
        pytest.skip("no adb binary")
    listed = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=30).stdout.splitlines()[1:]
    attached = [line.split()[0] for line in listed if line.strip().endswith("\tdevice")]
    if not attached:
        pytest.skip("no device attached")
    return attached[0]


def test_adb_without_the_binary_is_one_line(tmp_path, monkeypatch):
    if shutil.which("adb") is not None:
        pytest.skip("an adb binary is installed here")
    devices = write_devices(tmp_path / "devices.yaml", phone={"url": "adb://R58M"})
    with pytest.raises(UserError, match=r"^device phone \(adb://R58M\): adb:// needs the adb binary \(Android "
                                        r"platform-tools\) on PATH$"):
        identity("phone", devices)


def test_bench_over_adb(cnn_package, tmp_path):
    serial = adb_serial()
    python = os.environ.get("EDGEKIT_TEST_ADB_PYTHON")
    if not python:
        pytest.skip("set EDGEKIT_TEST_ADB_PYTHON to the device's Python with edgekit[runtime-ort]")
    devices = write_devices(tmp_path / "devices.yaml", phone={"url": f"adb://{serial}", "python": python})
    records, device = bench_on_device([cnn_package], "phone", devices, runs=10, warmup=2)
    assert records[0].latency_ms.p50 > 0 and device["cpu"]["machine"] in ("aarch64", "armv8l", "x86_64")


def test_a_runner_that_answers_another_versions_json_is_one_line(cnn_package, tmp_path):
    """A device whose runner answers without the keys this edgekit reads (another version's runner): one line."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text('#!/bin/sh\necho \'{"answer": "from another edgekit"}\'\n')
    python.chmod(0o755)
    devices = write_devices(tmp_path / "devices.yaml", other={"url": f"local://{venv}", "cache_dir": str(tmp_path / "c")})
    with pytest.raises(UserError, match=r"^device other \(local://.*\): its runner answered 'has' without present, path: "
                                        r"install the same edgekit version there as here$"):
        bench_on_device([cnn_package], "other", devices, runs=2, warmup=0)
