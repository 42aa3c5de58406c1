"""The evaluate/tolerance sections of recipes: what is accepted and the one-line errors for mistakes."""

import pytest

from edgekit.errors import UserError
from edgekit.recipe import load_recipe


def _recipe(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nsteps: []\n" + text)
    return load_recipe(path)


def test_evaluate_and_tolerance_sections(tmp_path):
    recipe = _recipe(tmp_path, "evaluate: {metric: top1}\ntolerance: {max_drop: 0.02, relative: true}\n")
    assert (recipe.evaluation.metric, recipe.evaluation.max_drop, recipe.evaluation.relative) == ("top1", 0.02, True)
    assert recipe.to_dict()["evaluate"]["max_drop"] == 0.02


def test_custom_metric_relative_to_the_recipe_and_eval_data(tmp_path):
    (tmp_path / "score.py").write_text("def score(reference, candidate, labels):\n    return 1.0\n")
    (tmp_path / "eval.npz").write_bytes(b"")
    recipe = _recipe(tmp_path, "evaluate: {metric: score.py:score, higher_is_better: false, data: eval.npz}\n")
    assert recipe.evaluation.metric == f"{tmp_path / 'score.py'}:score"
    assert recipe.evaluation.data == str(tmp_path / "eval.npz") and recipe.evaluation.higher_is_better is False


@pytest.mark.parametrize(("text", "message"), [
    ("evaluate: {metric: cosin}\n", r"unknown metric 'cosin' \(did you mean 'cosine'\?\)"),
    ("evaluate: {metric: score.py:score}\n", "metric file score.py not found"),
    ("evaluate: {metric: top1, max_drop: lots}\n", r"parameter 'max_drop' = 'lots' \(str\); expected a number"),
    ("tolerance: {max_drop: -1}\n", r"parameter 'max_drop' = -1 is outside \[0.0, 1000000000.0\]"),
    ("tolerance: {max_drop: 0.01, relativ: true}\n", r"unknown parameter 'relativ' \(did you mean 'relative'\?\)"),
    ("evaluate: {max_drop: 0.01}\ntolerance: {max_drop: 0.02}\n", "max_drop is given in both 'evaluate' and 'tolerance'"),
    ("evaluate: {relative: 1}\n", r"parameter 'relative' = 1 \(int\); expected true or false"),
    ("evaluate: {data: missing.npz}\n", "evaluate: data missing.npz not found"),
    ("tolerence: {max_drop: 0.01}\n", r"unknown field 'tolerence' \(did you mean 'tolerance'\?\)"),
])
def test_validation_errors_name_the_recipe_and_field(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as error:
        _recipe(tmp_path, text)
    assert str(tmp_path / "r.yaml") in str(error.value)
