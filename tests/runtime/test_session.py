"""The ORT Session: feed checks, concurrent runs, and no torch in the app process."""

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgekit.errors import UserError
from edgekit.runtime import load


@pytest.fixture(scope="module")
def session(cnn_package):
    return load(cnn_package)


def test_specs_and_run(session):
    assert session.inputs[0].name == "image" and session.inputs[0].shape == ("batch", 1, 8, 8)
    out = session.run({"image": np.zeros((3, 1, 8, 8), np.float32)})
    assert list(out) == [session.outputs[0].name] and out[session.outputs[0].name].shape == (3, 4)


@pytest.mark.parametrize("feeds, message", [
    ({}, "missing image"),
    ({"image": np.zeros((1, 1, 8, 8), np.float32), "extra": np.zeros(1)}, "unknown extra"),
    ({"image": np.zeros((1, 1, 8, 8), np.float64)}, "input 'image': dtype float64 != float32"),
    ({"image": np.zeros((1, 1, 7, 8), np.float32)}, r"input 'image': dim 2 is 7, expected 8"),
    ({"image": np.zeros((1, 8, 8), np.float32)}, "rank 3 != 4"),
    ({"image": [[1.0]]}, "expected a numpy array, got list"),
])
def test_bad_feeds_are_clear_errors(session, feeds, message):
    with pytest.raises(UserError, match=message):
        session.run(feeds)


def test_concurrent_runs_match_serial_runs(session):
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((2, 1, 8, 8)).astype(np.float32) for _ in range(16)]
    serial = [session.run({"image": b})[session.outputs[0].name] for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda b: session.run({"image": b})[session.outputs[0].name], batches))
    for want, got in zip(serial, parallel):
        np.testing.assert_array_equal(want, got)


def test_runtime_never_imports_torch(cnn_package):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import edgekit.runtime
        session = edgekit.runtime.load({str(cnn_package)!r})
        session.run({{"image": np.zeros((1, 1, 8, 8), np.float32)}})
        print("torch" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
