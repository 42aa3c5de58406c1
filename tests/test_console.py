"""What the CLI renders: the demo table keeps its columns narrow when a row failed, and names the failure."""

from __future__ import annotations

import io

from edgekit import console


def test_a_failed_demo_row_is_named_below_the_table_not_inside_it(monkeypatch):
    rows = [
        {"target": "cpu-ort", "runtime": "onnxruntime 1.0", "precision": "fp32", "recipe": "fp32", "file_bytes": 1_230_000,
         "p50_ms": 0.64, "mean_ms": 0.7, "accuracy": 0.9972, "reference_accuracy": 0.9972, "top1_agreement": 1.0},
        {"target": "mobile-tflite", "precision": "int8", "recipe": "int8-tflite",
         "error": "step 'quantize-tflite' failed: RuntimeError: a long reason that would widen any column it sat in"},
    ]
    screen = io.StringIO()
    monkeypatch.setattr(console.out, "file", screen)
    console.show_demo(rows)
    lines = screen.getvalue().splitlines()
    table = [line for line in lines if "cpu-ort" in line or "mobile-tflite" in line and "failed:" not in line]
    assert len(table) == 2 and max(len(line) for line in table) < 130
    assert any("failed" in line for line in table if "mobile-tflite" in line)
    assert lines[-1] == ("failed: mobile-tflite int8 (int8-tflite): step 'quantize-tflite' failed: RuntimeError: "
                         "a long reason that would widen any column it sat in")
