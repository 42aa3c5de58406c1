"""One recipe, every CPU target: `int8`, `int4-weights` and `prune-distill-int8` say what, each target lowers them to
its own toolchain, and every package runs in its real runtime within what its precision allows."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODELS

from edgekit.compiler import compile
from edgekit.metrics import Evaluation
from edgekit.runtime import load
from edgekit.spec import parse_input_spec

TOKENS = (parse_input_spec("tokens:batchx4x128:float32"),)
CPU_TARGETS = ("cpu-ort", "cpu-openvino", "mobile-tflite", "mobile-executorch")
# the pass each target's quantize entry runs: the recipe names none of them
QUANTIZER = {
    ("cpu-ort", "int8"): "quantize-static", ("cpu-openvino", "int8"): "quantize-nncf",
    ("mobile-tflite", "int8"): "quantize-tflite", ("mobile-executorch", "int8"): "quantize-executorch",
    ("cpu-ort", "int4"): "quantize-int4", ("cpu-openvino", "int4"): "compress-weights-nncf",
    ("mobile-tflite", "int4"): "quantize-tflite", ("mobile-executorch", "int4"): "quantize-executorch",
}
FLOAT_BYTES = (128 * 256 + 256 * 128 + 128 * 4) * 4  # the classifier's fp32 weights
# lowest cosine to the source each precision keeps on this model (int4: groups of 128, 16 levels per weight)
MIN_COSINE = {"int8": 0.98, "int4": 0.95}


@pytest.fixture(scope="module")
def token_data(tmp_path_factory):
    """96 seeded token batches labelled by the source model (a classifier distillation can train on)."""
    import torch
    from models import token_classifier

    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((96, 4, 128)).astype(np.float32)
    module, _ = token_classifier()
    with torch.no_grad():
        labels = module(torch.from_numpy(tokens)).argmax(dim=1).numpy()
    path = tmp_path_factory.mktemp("tokens") / "tokens.npz"
    np.savez(path, tokens=tokens, labels=labels)
    return path


@pytest.fixture(scope="module")
def step_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("intent-cache")


@pytest.mark.parametrize("target", CPU_TARGETS)
@pytest.mark.parametrize("recipe", ["int8", "int4-weights", "prune-distill-int8"])
def test_one_recipe_compiles_on_every_cpu_target(recipe, target, token_data, step_cache, tmp_path):
    # judged below by this test's own floors (a seeded random model loses more to int4 than a trained one)
    loose = Evaluation("top1" if recipe == "prune-distill-int8" else "cosine", max_drop=0.2)
    result = compile(f"{MODELS}:token_classifier", target, tmp_path / "pkg", recipe, token_data, token_data, TOKENS,
                     cache_dir=step_cache, bench_runs=3, tolerance=loose)
    manifest = result.manifest
    precision = "int4" if recipe == "int4-weights" else "int8"
    applied = [step["pass"] for step in manifest.recipe["applied"]]
    assert manifest.precision == precision and QUANTIZER[(target, precision)] in applied
    lowered = [s for s in result.plan.describe() if s["pass"] == QUANTIZER[(target, precision)]]
    assert lowered[0]["reason"].startswith(f"quantize {precision}/") and lowered[0]["reason"].endswith(f"on {target}")
    if recipe == "prune-distill-int8":
        assert applied[:2] == ["prune-structured", "distill"]
    files = manifest.file_bytes
    assert files < FLOAT_BYTES * (0.6 if precision == "int8" else 0.45)  # the weights really are stored smaller
    session = load(result.package)
    data = np.load(token_data)
    outputs = np.concatenate([session.run({"tokens": data["tokens"][i:i + 1]})[session.outputs[0].name]
                              for i in range(16)])
    import torch
    from models import token_classifier

    with torch.no_grad():
        reference = token_classifier()[0](torch.from_numpy(data["tokens"][:16])).numpy()
    cosine = np.sum(outputs * reference, axis=1) / (np.linalg.norm(outputs, axis=1) * np.linalg.norm(reference, axis=1))
    if recipe == "prune-distill-int8":  # a half-width student trained to pick the teacher's class, not its logits
        agreement = np.mean(outputs.argmax(axis=1) == reference.argmax(axis=1))
        assert agreement >= 0.8 and manifest.metrics.fidelity["top1_agreement"] >= 0.8, (target, agreement)
    else:
        assert cosine.mean() >= MIN_COSINE[precision], (target, recipe, cosine.mean())


@pytest.mark.parametrize("target, intent, quantizer", [
    ("cpu-ort", "{precision: int8, scheme: dynamic}", "quantize-dynamic"),
    ("cpu-openvino", "{precision: int8, scheme: weight-only}", "compress-weights-nncf"),
    ("mobile-tflite", "{precision: int8, scheme: dynamic}", "quantize-tflite"),
    ("mobile-tflite", "{precision: int4, scheme: weight-only, granularity: per-channel}", "quantize-tflite"),
    ("mobile-executorch", "{precision: int8, scheme: dynamic}", "quantize-executorch"),
])
def test_every_scheme_a_target_lists_compiles_from_a_pytorch_source(target, intent, quantizer, token_data, step_cache,
                                                                     tmp_path):
    precision = "int4" if "int4" in intent else "int8"
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"precision: {precision}\nsteps:\n  - quantize: {intent}\nevaluate: {{metric: cosine, max_drop: 0.2}}\n")
    result = compile(f"{MODELS}:token_classifier", target, tmp_path / "pkg", recipe, token_data, token_data, TOKENS,
                     cache_dir=step_cache, bench_runs=3)
    manifest = result.manifest
    assert manifest.precision == precision and manifest.recipe["applied"][-1]["pass"] == quantizer
    assert manifest.file_bytes < FLOAT_BYTES * (0.6 if precision == "int8" else 0.45)
    assert manifest.metrics.fidelity["cosine_mean"] >= MIN_COSINE[precision]


def test_int4_for_executorch_refuses_a_model_without_a_linear_it_can_group(cnn_source, cnn_data, tmp_path):
    from conftest import CNN_INPUT

    from edgekit.errors import UnsupportedOnTarget

    with pytest.raises(UnsupportedOnTarget, match="no Linear layer whose input size is a multiple of the group size 128"):
        compile(cnn_source, "mobile-executorch", tmp_path / "pkg", "int4-weights", cnn_data, cnn_data,
                (parse_input_spec(CNN_INPUT),), bench_runs=2)
    assert not (tmp_path / "pkg").exists()
