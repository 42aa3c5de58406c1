"""What the CLI renders: the demo table keeps its columns narrow when a row failed, and names the failure."""

from __future__ import annotations

import io

from edgekit import console


def test_a_failed_demo_row_is_named_below_the_table_not_inside_it(monkeypatch):
    rows = [
        {"target": "cpu-ort", "runtime": "onnxruntime 1.0", "precision": "fp32", "recipe": "fp32", "file_bytes": 1_230_000,
         "p50_ms": 0.64, "mean_ms": 0.7, "accuracy": 0.9972, "reference_accuracy": 0.9972, "top1_agreement": 1.0},
        {"target": "mobile-tflite", "precision": "int8", "recipe": "int8",
         "error": "step 'quantize-tflite' failed: RuntimeError: a long reason that would widen any column it sat in"},
    ]
    screen = io.StringIO()
    monkeypatch.setattr(console.out, "_file", screen)  # restored to None: follow sys.stdout
    console.show_demo(rows)
    lines = screen.getvalue().splitlines()
    table = [line for line in lines if "cpu-ort" in line or "mobile-tflite" in line and "failed:" not in line]
    assert len(table) == 2 and max(len(line) for line in table) < 130
    assert any("failed" in line for line in table if "mobile-tflite" in line)
    assert lines[-1] == ("failed: mobile-tflite int8 (int8): step 'quantize-tflite' failed: RuntimeError: "
                         "a long reason that would widen any column it sat in")


def test_recipe_listing_shows_intents_and_passes(monkeypatch):
    from edgekit.recipe import load_recipe

    screen = io.StringIO()
    monkeypatch.setattr(console.out, "_file", screen)  # restored to None: follow sys.stdout
    monkeypatch.setattr(console.out, "width", 400)
    console.show_recipes([load_recipe(name).to_dict() | {"description": ""}
                          for name in ("int8", "int4-weights", "prune-distill-int8", "int8-nncf-transformer")])
    text = screen.getvalue()
    assert "quantize int8/static" in text and "quantize int4 " in text  # int4-weights leaves the scheme to the target
    assert "prune-structured → distill → quantize int8/static" in text and "quantize-nncf" in text
