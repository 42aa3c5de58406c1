"""Shared fixtures: tiny models on disk (factory file, ONNX), data files, an isolated cache."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
MODELS = TESTS / "models.py"
sys.path.insert(0, str(TESTS))

CNN_INPUT = "image:batchx1x8x8:float32"
MLP_INPUT = "features:batchx16:float32"


@pytest.fixture(scope="session")
def cnn_source() -> str:
    """`file.py:factory` of the tiny CNN (input image [batch,1,8,8], 4 classes)."""
    return f"{MODELS}:tiny_cnn"


@pytest.fixture(scope="session")
def mlp_source() -> str:
    return f"{MODELS}:tiny_mlp"


@pytest.fixture(scope="session")
def cnn_data(tmp_path_factory) -> Path:
    """64 seeded samples for the tiny CNN with labels (the source model's own predictions)."""
    import torch
    from models import tiny_cnn

    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    module, _ = tiny_cnn()
    with torch.no_grad():
        labels = module(torch.from_numpy(images)).argmax(dim=1).numpy()
    path = folder / "cnn.npz"
    np.savez(path, image=images, labels=labels)
    return path


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory) -> Path:
    """The tiny CNN exported once to ONNX (unoptimized: BatchNorm still there) with a symbolic batch dim."""
    import torch
    from models import tiny_cnn

    module, _ = tiny_cnn()
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    torch.onnx.export(module, (torch.randn(2, 1, 8, 8),), str(path), dynamo=True, input_names=["image"],
                      output_names=["logits"], dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
                      external_data=False, optimize=False, verbose=False)
    return path


@pytest.fixture()
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def _restore_edgekit_logger():
    """The CLI configures the `edgekit` logger; give each test the default one back."""
    import logging

    logger = logging.getLogger("edgekit")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


@pytest.fixture(scope="session")
def cnn_package(tmp_path_factory, cnn_source, cnn_data) -> Path:
    """An fp32 cpu-ort package of the tiny CNN (symbolic batch), built once."""
    from edgekit.compiler import compile
    from edgekit.spec import parse_input_spec

    out = tmp_path_factory.mktemp("pkg") / "cnn-fp32"
    compile(cnn_source, "cpu-ort", out, "fp32", cnn_data, cnn_data, (parse_input_spec(CNN_INPUT),), bench_runs=3)
    return out


def compile_cnn(tmp_path_factory, source: str, data: Path, target: str, recipe: str, name: str) -> Path:
    """A package of the tiny CNN (symbolic batch) for `target`; all such builds share one step cache per session."""
    from edgekit.compiler import compile
    from edgekit.spec import parse_input_spec

    out = tmp_path_factory.mktemp(target) / name
    compile(source, target, out, recipe, data, data, (parse_input_spec(CNN_INPUT),),
            cache_dir=tmp_path_factory.getbasetemp() / "step-cache", bench_runs=3)
    return out


def run_litert(path: Path, images: np.ndarray) -> np.ndarray:
    """The first output of the .tflite at `path` on `images` (its first input resized to them), straight from LiteRT."""
    from edgekit.runtime.tflite import interpreter_class

    interpreter = interpreter_class()(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.fixture(scope="session")
def runtime_only_python() -> Path:
    """The python of a venv holding only `edgekit[runtime-ort]` (numpy + onnxruntime), built from this checkout."""
    sys.path.insert(0, str(TESTS.parent))
    from benchmarks.runtime_venv import runtime_only_python as build

    return build()
