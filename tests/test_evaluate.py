"""Scoring against the source: built-in metrics, their direction, relative limits, custom metrics."""

import numpy as np
import pytest

from edgekit.errors import UserError
from edgekit.metrics import Evaluation, compare, load_metric, verdict

METRIC_FILE = '''
import numpy as np

def agreement(reference, candidate, labels):
    return float((reference[0].argmax(1) == candidate[0].argmax(1)).mean())

def error(reference, candidate, labels):
    return float(np.abs(reference[0] - candidate[0]).max())

def broken(reference, candidate, labels):
    raise ValueError("bad shapes")
'''


def _outputs(rows: np.ndarray) -> list[list[np.ndarray]]:
    """Samples × outputs, each sample a batch of one."""
    return [[row[None]] for row in rows]


@pytest.fixture()
def logits():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((20, 4)).astype(np.float32)
    candidate = reference.copy()
    candidate[:5] = candidate[:5, ::-1]  # 5 of 20 rows reordered: top-1 changes on most of them
    labels = reference.argmax(1)
    return reference, candidate, labels


def test_builtin_metrics_and_directions(logits):
    reference, candidate, labels = logits
    flipped = float((reference.argmax(1) != candidate.argmax(1)).mean())

    def judged(evaluation: Evaluation, with_labels=None):
        return verdict(compare(_outputs(reference), _outputs(candidate), with_labels, evaluation), evaluation)

    top1 = judged(Evaluation("top1", max_drop=0.01))
    assert top1.reference == 1.0 and top1.value == pytest.approx(1 - flipped) and not top1.ok
    assert top1.changed == round(flipped * len(reference)) and top1.samples == len(reference)
    auto = judged(Evaluation("auto"), labels)  # a classifier's [batch, classes] output, labelled: top-1 accuracy
    assert auto.metric == "top1" and "against the labels" in auto.reason and auto.value == pytest.approx(1 - flipped)
    mse = judged(Evaluation("mse", max_drop=10.0))
    assert mse.reference == 0.0 and mse.drop == pytest.approx(float(((reference - candidate) ** 2).mean()), rel=1e-6)
    assert mse.ok  # lower is better: drop = value - 0
    metrics = compare(_outputs(reference), _outputs(candidate), None, Evaluation("cosine"))
    cosine = verdict(metrics, Evaluation("cosine", max_drop=0.5))
    assert cosine.drop == pytest.approx(1 - metrics["cosine_mean"]) and cosine.worst == pytest.approx(metrics["cosine_min"])
    with pytest.raises(UserError, match="metric top1 was not computed for these results"):
        verdict(metrics, Evaluation("top1"))


def test_relative_limit_scales_with_the_reference(logits):
    reference, candidate, labels = logits
    labels = labels.copy()
    labels[10:] = (labels[10:] + 1) % 4  # the source is right on half the samples
    evaluation = Evaluation("top1", max_drop=0.1, relative=True)
    metrics = compare(_outputs(reference), _outputs(candidate), labels, evaluation)
    check = verdict(metrics, evaluation)
    assert check.reference == pytest.approx(0.5) and check.limit == pytest.approx(0.05)
    assert check.drop == pytest.approx(0.5 - float((candidate.argmax(1) == labels).mean()))
    assert check.ok is (check.drop <= 0.05)
    assert verdict(metrics, Evaluation("top1", max_drop=2 * max(check.drop, 0.01) / 0.5, relative=True)).ok


def test_custom_metric_from_a_file(logits, tmp_path):
    reference, candidate, labels = logits
    (tmp_path / "metrics.py").write_text(METRIC_FILE)
    spec = f"{tmp_path / 'metrics.py'}:agreement"
    metrics = compare(_outputs(reference), _outputs(candidate), labels, Evaluation(spec))
    assert metrics["custom"]["reference"] == 1.0
    assert metrics["custom"]["value"] == pytest.approx(metrics["top1_agreement"])
    higher = verdict(metrics, Evaluation(spec, max_drop=0.5))
    assert higher.drop == pytest.approx(1 - metrics["top1_agreement"]) and higher.ok
    error_spec = f"{tmp_path / 'metrics.py'}:error"
    lower = verdict(compare(_outputs(reference), _outputs(candidate), labels, Evaluation(error_spec)),
                    Evaluation(error_spec, max_drop=0.1, higher_is_better=False))
    assert lower.reference == 0.0 and lower.drop == pytest.approx(float(np.abs(reference - candidate).max())) and not lower.ok


def test_custom_metric_from_a_module():
    spec, function = load_metric("numpy:mean")
    assert spec == "numpy:mean" and function is np.mean


def test_custom_metric_errors(logits, tmp_path):
    reference, candidate, labels = logits
    (tmp_path / "metrics.py").write_text(METRIC_FILE)
    with pytest.raises(UserError, match="metric file nowhere.py not found"):
        load_metric("nowhere.py:score")
    with pytest.raises(UserError, match="has no function 'missing'"):
        load_metric(f"{tmp_path / 'metrics.py'}:missing")
    with pytest.raises(UserError, match="cannot import metric module 'no_such_module'"):
        load_metric("no_such_module:score")
    with pytest.raises(UserError, match="custom metric .*:broken failed: ValueError: bad shapes"):
        compare(_outputs(reference), _outputs(candidate), labels, Evaluation(f"{tmp_path / 'metrics.py'}:broken"))


def test_one_score_ranks_candidates_for_every_accuracy_aware_pass():
    """metrics.sample_score is what fallback, NNCF accuracy control, INC autotune and distillation rank by."""
    from edgekit.metrics import auto_metric, sample_score

    reference = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    flipped = np.array([[0.0, 1.0, 3.0], [0.0, 2.0, 1.0]])
    assert sample_score("top1", reference, reference) == 1.0 and sample_score("top1", reference, flipped) == 0.5
    assert sample_score("top1", reference, flipped, labels=np.array([2, 1])) == 1.0  # labels, not the reference
    assert sample_score("cosine", reference, 2 * reference) == pytest.approx(1.0)
    assert sample_score("cosine", reference, flipped) == pytest.approx((1 / 10 + 1) / 2)  # rows: dot 1 over norms 10, identical
    # [batch, classes] scores are judged by top-1 with or without labels; unit-norm rows are an embedding
    assert auto_metric(reference, labelled=True) == auto_metric(reference, labelled=False) == "top1"
    assert auto_metric(reference / np.linalg.norm(reference, axis=1, keepdims=True), labelled=False) == "cosine"
    assert sample_score("mse", reference, flipped) == pytest.approx(-np.mean((reference - flipped) ** 2, axis=1).mean())
    with pytest.raises(UserError, match="metric file.py:fn cannot rank candidates sample by sample"):
        sample_score("file.py:fn", reference, flipped)


def test_a_position_the_source_ties_is_read_either_way():
    """sequence/agreement: a class the source scores within TIE of the output's range of its best is a tie, not a flip;
    beyond it, a different arg-max changes the sample's reading."""
    from edgekit.task_metrics import METRICS, TIE, MetricOptions

    reference = np.array([[[10.0, 0.0, 10.0 - TIE * 5], [0.0, 1.0, 0.0]]])  # range 10: position 0 ties classes 0 and 2
    tied = np.array([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    flipped = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    options = MetricOptions()
    assert METRICS["sequence"].score(reference, tied, options) == 1.0
    assert METRICS["sequence"].score(reference, flipped, options) == 0.0
    assert METRICS["agreement"].score(reference, flipped, options) == 0.5
    apart = reference.copy()
    apart[0, 0, 2] = 10.0 - TIE * 20  # now 0.02 below the best: the source tells them apart
    assert METRICS["sequence"].score(apart, tied, options) == 0.0
