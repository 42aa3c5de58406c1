"""`edgekit serve` over real HTTP on 127.0.0.1: JSON, .npy and .npz bodies give the in-process session's outputs, a
bounded concurrent load, Prometheus metrics that count what was sent, drift rising on shifted inputs, and bad requests
answered with one line of JSON while the server keeps serving."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from numpy.lib import format as npy_format
from prometheus_client.parser import text_string_to_metric_families

from edgekit.errors import UserError
from edgekit.runtime import load
from edgekit.serving import build_app, listen, url

NPY = {"content-type": "application/x-npy"}


def npy(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def images(count: int, seed: int, shift: float = 0.0) -> list[np.ndarray]:
    """Batch-1 images like the tiny CNN's calibration data (standard normal), moved by `shift` calibration stds."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((1, 1, 8, 8)) + shift).astype(np.float32) for _ in range(count)]


def metrics(base: str) -> dict[str, dict]:
    """Prometheus samples by name → {labels as a sorted tuple: value}."""
    found: dict[str, dict] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.fixture(scope="module")
def server(cnn_package, tmp_path_factory):
    """`edgekit serve` as a user runs it, on a free port; stopped with Ctrl-C (SIGINT) at the end."""
    cache = tmp_path_factory.mktemp("serve-cache")
    process = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "serve", str(cnn_package), "--port", "0",
                                "--threads", "1", "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "EDGEKIT_CACHE_DIR": str(cache)})
    line = process.stdout.readline()
    found = re.fullmatch(rf"serving {re.escape(str(cnn_package))} on (http://127\.0\.0\.1:\d+): POST /infer, GET /healthz, "
                         r"GET /metrics \(Ctrl-C stops\)\n", line)
    assert found, line + process.stderr.read()
    yield found.group(1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0 and stdout == "stopped\n" and stderr == ""
    assert "Started server process" in (cache / "logs" / "last.log").read_text()  # uvicorn's lines: in the log only


@contextmanager
def served(app):
    """uvicorn serving `app` in a thread of this process, on a free port."""
    import uvicorn

    listener = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield url(listener)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def test_json_npy_and_npz_bodies_give_the_sessions_outputs(server, cnn_package):
    """Float32 survives JSON exactly (Python prints the shortest repr of each value), so outputs are equal bit for bit
    to the in-process session's on the same batch."""
    session = load(cnn_package)
    batch = np.random.default_rng(5).standard_normal((3, 1, 8, 8)).astype(np.float32)
    [output] = [spec.name for spec in session.outputs]
    expected = session.run({"image": batch})[output]
    answer = httpx.post(f"{server}/infer", json={"inputs": {"image": batch.tolist()}})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert np.array_equal(np.array(answer.json()["outputs"][output], np.float32), expected)
    answer = httpx.post(f"{server}/infer", content=npy(batch), headers={**NPY, "accept": "application/x-npy"})
    assert answer.headers["content-type"] == "application/x-npy"
    assert np.array_equal(np.load(io.BytesIO(answer.content), allow_pickle=False), expected)
    archive = io.BytesIO()
    np.savez_compressed(archive, image=batch)
    answer = httpx.post(f"{server}/infer", content=archive.getvalue(),
                        headers={"content-type": "application/x-npz", "accept": "application/x-npz"})
    with np.load(io.BytesIO(answer.content), allow_pickle=False) as outputs:
        assert np.array_equal(outputs[output], expected)
    with httpx.Client(base_url=server) as http:
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["runtime"] == "onnxruntime" and health["self_test"]["ok"] is True
        latencies = []
        for _ in range(20):
            started = time.perf_counter()
            http.get("/healthz")
            latencies.append(time.perf_counter() - started)
    assert np.median(latencies) < 0.02  # a response stalled by Nagle's algorithm waits ~40 ms for the delayed ACK


def test_bounded_load_with_metrics(server, cnn_package):
    """8 clients x 500 requests at once: no errors, each answer equal to the in-process session's on its input, and
    /metrics counts exactly the requests sent (status 200, request and inference histograms)."""
    session = load(cnn_package)
    [output] = [spec.name for spec in session.outputs]
    clients, requests = 8, 500
    bodies = [[npy(image) for image in images(requests, seed=100 + client)] for client in range(clients)]
    expected = [[session.run({"image": np.load(io.BytesIO(body))})[output] for body in mine] for mine in bodies]
    before = metrics(server)

    def client(mine: list[bytes]) -> tuple[list[bytes | None], list[float]]:
        answers, latencies = [], []
        with httpx.Client(base_url=server, headers={**NPY, "accept": "application/x-npy"}) as http:
            for body in mine:
                started = time.perf_counter()
                answer = http.post("/infer", content=body)
                latencies.append(time.perf_counter() - started)
                answers.append(answer.content if answer.status_code == 200 else None)
        return answers, latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, bodies))
    elapsed = time.perf_counter() - started
    mismatches = [sum(answer is None or not np.array_equal(np.load(io.BytesIO(answer)), want)
                      for answer, want in zip(answers, wanted)) for (answers, _), wanted in zip(results, expected)]
    assert mismatches == [0] * clients
    after = metrics(server)
    sent = clients * requests
    ok = (("status", "200"),)
    assert after["edgekit_infer_requests_total"][ok] - before.get("edgekit_infer_requests_total", {}).get(ok, 0) == sent
    assert after["edgekit_infer_request_seconds_count"][()] - before["edgekit_infer_request_seconds_count"][()] == sent
    assert after["edgekit_inference_seconds_count"][()] - before["edgekit_inference_seconds_count"][()] == sent
    assert after["edgekit_inference_seconds_bucket"][(("le", "+Inf"),)] == after["edgekit_inference_seconds_count"][()]
    latencies = np.concatenate([latencies for _, latencies in results])
    print(f"\nload: {sent} requests from {clients} clients in {elapsed:.2f} s = {sent / elapsed:.0f} requests/s; "
          f"client-side p50 {np.median(latencies) * 1e3:.2f} ms, p99 {np.percentile(latencies, 99) * 1e3:.2f} ms")


def test_drift_rises_on_shifted_inputs(cnn_package, caplog):
    """A fresh server: 100 in-distribution images keep the drift score and out-of-range share under their thresholds;
    150 images moved by +3 calibration stds take both over (recent mean 3 x 150/250 = 1.8 stds away), with one
    warning line in the log."""
    with served(build_app(cnn_package, threads=1)) as base, httpx.Client(base_url=base, headers=NPY) as http:
        for image in images(100, seed=7):
            assert http.post("/infer", content=npy(image)).status_code == 200
        calm = metrics(base)
        with caplog.at_level("WARNING", logger="edgekit.runtime"):
            for image in images(150, seed=8, shift=3.0):
                assert http.post("/infer", content=npy(image)).status_code == 200
            shifted = metrics(base)
    image = (("input", "image"),)
    threshold = calm["edgekit_input_drift_threshold"][()]
    assert calm["edgekit_input_drift_score"][image] < 0.2 < 1.0 == threshold
    assert calm["edgekit_input_outside_share"][image] < calm["edgekit_input_outside_threshold"][()] == 0.01
    assert shifted["edgekit_input_drift_score"][image] > 1.5 > threshold
    assert shifted["edgekit_input_outside_share"][image] > 0.05
    [warning] = caplog.records  # merged every 32 runs and at each scrape: the first merge past the threshold warns
    assert warning.getMessage().startswith("input 'image' drifted from the package's data over the last ~")


def npz_bomb() -> bytes:
    """A small .npz whose member unpacks to 17 MiB of zeros."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("image.npy", npy(np.zeros(17 * 2**18, np.float32)))
    return archive.getvalue()


def pickled_npy() -> bytes:
    stream = io.BytesIO()
    np.save(stream, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return stream.getvalue()


def lying_npy() -> bytes:
    """A header claiming 10^12 floats in front of 64 bytes of data (numpy would allocate the claim first)."""
    stream = io.BytesIO()
    npy_format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    return stream.getvalue() + bytes(64)


GOOD = np.zeros((1, 1, 8, 8), np.float32).tolist()
BAD_REQUESTS = [
    ("POST", b"{", {}, 400, "body is not JSON"),
    ("POST", json.dumps({"inputs": {"img": GOOD}}).encode(), {}, 400, "unknown input(s) img (the model takes image)"),
    ("POST", json.dumps({"inputs": {}}).encode(), {}, 400, "feeds: missing image"),
    ("POST", json.dumps({"inputs": {"image": [[1.0, 2.0]]}}).encode(), {}, 400, "input 'image': rank 2 != 4"),
    ("POST", json.dumps({"inputs": {"image": [[1.0], [1.0, 2.0]]}}).encode(), {}, 400, "not a rectangular nested list"),
    ("POST", json.dumps({"inputs": {"image": [["a"]]}}).encode(), {}, 400, "expected float32 values"),
    ("POST", b'{"inputs": {"image": [NaN]}}', {}, 400, "NaN is not a JSON number"),
    ("POST", json.dumps({"image": GOOD}).encode(), {}, 400, 'expected a JSON object {"inputs"'),
    ("POST", npy(np.zeros((1, 1, 8, 8), np.float64)), NPY, 400, "input 'image': dtype float64 != float32"),
    ("POST", pickled_npy(), NPY, 400, "holds Python objects"),
    ("POST", lying_npy(), NPY, 400, "its header declares 4000000000000 bytes of data but it holds 64"),
    ("POST", b"\x93NUMPY garbage", NPY, 400, "body is not a valid .npy array"),
    ("POST", b"PK\x03\x04 truncated", {"content-type": "application/x-npz"}, 400, "not a valid .npz archive"),
    ("POST", npz_bomb(), {"content-type": "application/x-npz"}, 413, "unpacks to 17825920 bytes"),
    ("POST", b"0" * (16 * 2**20 + 1), {}, 413, "over the 16777216 byte limit"),
    ("POST", b"{}", {"content-type": "text/csv"}, 415, "Content-Type text/csv is not one of"),
    ("GET", b"", {}, 405, "GET /infer: Method Not Allowed"),
]


@pytest.mark.parametrize("method, body, headers, status, message", BAD_REQUESTS, ids=[r[4][:30] for r in BAD_REQUESTS])
def test_bad_requests_get_one_line_of_json(server, method, body, headers, status, message):
    answer = httpx.request(method, f"{server}/infer", content=body or None, headers=headers)
    assert answer.status_code == status
    assert answer.text.count("\n") == 1 and answer.text.endswith("\n") and "Traceback" not in answer.text
    assert message in answer.json()["error"] and list(answer.json()) == ["error"]
    assert httpx.post(f"{server}/infer", json={"inputs": {"image": GOOD}}).status_code == 200  # still serving


def test_unknown_paths_and_missing_packages(server, tmp_path):
    answer = httpx.get(f"{server}/nowhere")
    assert answer.status_code == 404 and answer.json() == {"error": "GET /nowhere: Not Found"}
    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "serve", str(tmp_path / "missing")], capture_output=True,
                          text=True, env={**os.environ, "EDGEKIT_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 1 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    taken = listen("127.0.0.1", 0)
    with pytest.raises(UserError, match=rf"cannot listen on 127.0.0.1:{taken.getsockname()[1]}: Address already in use"):
        listen("127.0.0.1", taken.getsockname()[1])
    taken.close()


def test_bodies_of_models_with_several_inputs_or_outputs_and_int_inputs():
    """What the tiny CNN cannot show: .npy for a two-input model, ints for an int input, .npy answers for two outputs."""
    from edgekit.serving.bodies import BadRequest, decode_feeds, encode_outputs
    from edgekit.spec import TensorSpec

    specs = (TensorSpec("ids", ("batch", 4), "int64"), TensorSpec("mask", ("batch", 4), "uint8"))
    feeds = decode_feeds(json.dumps({"inputs": {"ids": [[1, 2, 3, 2**40]], "mask": [[1, 1, 0, 0]]}}).encode(), "", specs, 1)
    assert feeds["ids"].dtype == np.int64 and feeds["ids"][0, 3] == 2**40 and feeds["mask"].dtype == np.uint8
    refusals = [
        (npy(np.zeros((1, 4), np.int64)), "application/x-npy", "an .npy body holds one array but the model takes 2 inputs"),
        (json.dumps({"inputs": {"ids": [[1.5, 2, 3, 4]]}}).encode(), "application/json; charset=utf-8",
         "input 'ids': expected int64 values, got float64"),
        (json.dumps({"inputs": {"mask": [[256, 0, 0, 0]]}}).encode(), "", "input 'mask': values outside the range of uint8"),
    ]
    for body, content_type, message in refusals:
        with pytest.raises(BadRequest, match=re.escape(message)):
            decode_feeds(body, content_type, specs, 2**20)
    two = {"a": np.zeros(2, np.float32), "b": np.ones(3, np.int64)}
    with pytest.raises(BadRequest, match="the model gives 2 outputs") as refused:
        encode_outputs(two, "application/x-npy")
    assert refused.value.status == 406
    body, media_type = encode_outputs(two, "application/x-npz, application/json;q=0.5")
    with np.load(io.BytesIO(body), allow_pickle=False) as archive:
        assert media_type == "application/x-npz" and archive["b"].tolist() == [1, 1, 1]
    named_like_arguments = {"file": np.arange(3, dtype=np.float32), "allow_pickle": np.ones((2, 2), np.uint8)}
    body, _ = encode_outputs(named_like_arguments, "application/x-npz")  # np.savez's own parameters: neither is lost
    with np.load(io.BytesIO(body), allow_pickle=False) as archive:
        assert sorted(archive.files) == ["allow_pickle", "file"]
        assert all(np.array_equal(archive[name], value) and archive[name].dtype == value.dtype
                   for name, value in named_like_arguments.items())
