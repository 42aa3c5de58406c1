"""The sweep's results files and static report: Pareto front, JSON/CSV/HTML on disk, and the page as headless Chromium renders it."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgekit.sweep.outputs import write_results
from edgekit.sweep.results import pareto_front

HOSTILE = "<script>alert(1)</script>"
SWEEP = {"started": "2025-01-01T00:00:00+00:00", "finished": "2025-01-01T00:10:00+00:00", "cells": 7, "ok": 6, "failed": 1,
         "reused": 1, "workers": 2, "ray": "2.40.0", "cpu": "Intel Xeon", "isa": "avx512_vnni", "edgekit": "0.1.0",
         "command": "edgekit sweep digits --targets cpu-ort,cpu-openvino"}
WINDOW = (1400, 4000)


def cell(model: str, target: str, recipe: str, precision: str, p50: float | None, quality: float | None,
         size: int | None, **changes) -> dict:
    """One row as the sweep engine writes it."""
    latency = None if p50 is None else {"p50": p50, "p90": p50 * 1.2, "mean": p50 * 1.05, "p50_low": p50 * 0.95,
                                        "p50_high": p50 * 1.07}
    row = {"cell": f"{model}/{target}/{recipe}", "key": "ab" * 32, "model": model, "source": "models.py:tiny_cnn",
           "target": target, "recipe": recipe, "chosen": recipe, "precision": precision, "device": "local",
           "node": "host-1", "status": "ok", "reason": "", "reused": False, "quality_metric": "accuracy",
           "quality": quality, "reference_quality": 0.98, "fidelity": {"metric": "cosine", "value": 0.999, "worst": 0.98},
           "latency_ms": latency, "size_bytes": size, "peak_rss_mb": 123.4, "compile_s": 3.2, "measure_s": 1.1,
           "package": f"packages/{model}-{target}-{recipe}",
           "conditions": {"threads": 2, "runs": 50, "cpu": "Intel Xeon", "isa": "avx512_vnni", "runtime_version": "1.20"}}
    return row | changes


ROWS = [
    cell("digits", "cpu-ort", "fp32", "fp32", 1.0, 0.98, 400_000),
    cell("digits", "cpu-ort", "int8", "int8", 0.4, 0.97, 110_000, reused=True),
    cell("digits", "cpu-openvino", "int8", "int8", 0.012345, 0.95, 120_000),
    cell("digits", "cpu-openvino", "fp32", "fp32", 0.9, 0.96, 400_000),
    cell("digits", "cpu-ort", "auto", "int8", 0.5, 0.94, 110_000, chosen="int8-static"),
    cell(HOSTILE, "cpu-ort", "fp32", "fp32", 1234.5, 0.5, 9_000_000),
    cell(HOSTILE, "cpu-ort", "int8", "int8", None, None, None, status="failed", reason="<script>alert(2)</script> boom",
         chosen=None, fidelity=None),
]
DIGITS_FRONT = {"digits/cpu-ort/fp32", "digits/cpu-ort/int8", "digits/cpu-openvino/int8"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], ""

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        """Descendants with this tag and/or class, in document order."""
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and (cls is None or cls in child.classes()):
                found.append(child)
            found.extend(child.find(tag, cls))
        return found


class Tree(HTMLParser):
    """A small DOM from the stdlib parser (no bs4 here): enough to query tags, classes and attributes."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#root", {}, None)
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {name: value or "" for name, value in attrs}, self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, {name: value or "" for name, value in attrs}, self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.text += data


def text_of(node: Node) -> str:
    return node.text + "".join(text_of(child) for child in node.children)


def grid_rows(page: str) -> list[Node]:
    (table,) = [node for node in Tree(page).root.find("table") if node.attrs.get("id") == "grid"]
    (body,) = table.find("tbody")
    return body.find("tr")


def test_pareto_front_keeps_the_undominated():
    # (3, 0.94) loses to (2, 0.95) on both axes; the fast low-quality point and the slow best one stay
    assert pareto_front([(1.0, 0.9), (2.0, 0.95), (3.0, 0.94), (0.5, 0.5)]) == [0, 1, 3]
    assert pareto_front([(5.0, 0.1)]) == [0]
    assert pareto_front([]) == []


def test_pareto_front_ties_and_non_finite():
    # equal points do not dominate each other; same latency with lower quality, or same quality slower, are dominated
    assert pareto_front([(1.0, 0.9), (1.0, 0.9), (1.0, 0.8), (2.0, 0.9)]) == [0, 1]
    assert pareto_front([(math.nan, 1.0), (1.0, 0.5), (0.5, math.inf)]) == [1]


def test_write_results_files(tmp_path):
    written = write_results(ROWS, SWEEP, tmp_path / "run")
    assert set(written) == {"json", "csv", "html"}
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["report.html", "results.csv", "results.json"]

    assert json.loads(written["json"].read_text()) == {"sweep": SWEEP, "rows": ROWS}

    with written["csv"].open(newline="") as handle:
        reader = csv.DictReader(handle)
        lines = list(reader)
    assert len(lines) == len(ROWS)
    for column in ("cell", "latency_ms.p50", "latency_ms.p50_high", "fidelity.worst", "conditions.threads", "size_bytes"):
        assert column in reader.fieldnames
    assert "latency_ms" not in reader.fieldnames and "conditions" not in reader.fieldnames
    assert float(lines[1]["latency_ms.p50"]) == 0.4 and lines[1]["reused"] == "True"
    assert lines[6]["latency_ms.p50"] == "" and lines[6]["reason"] == "<script>alert(2)</script> boom"

    page = written["html"].read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(2)&lt;/script&gt; boom" in page
    scripts = [len(body) for body in re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)]
    assert sum(length > 1_000_000 for length in scripts) == 1  # plotly's JS inlined once

    rows = grid_rows(page)
    assert [row.attrs["data-cell"] for row in rows] == [row["cell"] for row in ROWS]
    assert ["failed" in row.classes() for row in rows] == [False] * 6 + [True]
    starred = {row.attrs["data-cell"] for row in rows if text_of(row.find("td")[0]) == "★"}
    assert starred == DIGITS_FRONT | {f"{HOSTILE}/cpu-ort/fp32"}
    headers = [text_of(node) for node in Tree(page).root.find("th")]
    p50, size, quality = (headers.index(name) for name in ("p50 ms", "size MiB", "quality"))
    values = [[text_of(td) for td in row.find("td")] for row in rows]
    assert [line[p50] for line in values] == ["1.00", "0.400", "0.0123", "0.900", "0.500", "1230", "—"]
    assert values[0][size] == "0.38" and values[5][size] == "8.58" and values[2][quality] == "0.9500"


def test_all_failed_writes_a_page_with_nothing_to_plot(tmp_path):
    failed = [cell("m", "cpu-ort", recipe, "int8", None, None, None, status="failed", reason="no backend")
              for recipe in ("int8", "fp16")]
    page = write_results(failed, SWEEP | {"ok": 0, "failed": 2}, tmp_path)["html"].read_text()
    assert 'id="nothing"' in page and 'class="ek-plot"' not in page and len(page) < 100_000
    assert len(grid_rows(page)) == 2
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == failed


def test_non_finite_numbers_become_null(tmp_path):
    row = cell("m", "cpu-ort", "int8", "int8", 1.0, math.nan, 1000)
    write_results([row], SWEEP, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["quality"] is None
    page = (tmp_path / "report.html").read_text()
    assert 'data-kind="pareto"' not in page and 'data-kind="bars"' in page  # no quality: latency bars only


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium binary on PATH (apt-get install chromium)")
    return found


def browse(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on the page; --virtual-time-budget lets plotly's JS finish before the dump or shot."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
               "--virtual-time-budget=10000", *flags, page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=45)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return write_results(ROWS, SWEEP, tmp_path_factory.mktemp("sweep"))["html"]


def test_chromium_plots_every_figure(report, tmp_path):
    dom = Tree(browse(report, tmp_path / "profile", "--dump-dom").stdout).root
    plots = dom.find("div", "ek-plot")
    kinds = [(plot.attrs["data-kind"], plot.attrs.get("data-model")) for plot in plots]
    assert kinds == [("pareto", "digits"), ("pareto", HOSTILE), ("size", None), ("bars", "digits"), ("bars", HOSTILE)]
    for plot in plots:  # plotly ran and drew an SVG inside each wrapper
        assert plot.find("svg", "main-svg"), plot.attrs

    digits = plots[0]
    traces = digits.find("g", "scatterlayer")[0].find("g", "trace")
    assert len(traces) == int(digits.attrs["data-traces"]) == 5  # (target, precision) groups + the front
    assert len(traces[-1].find("path", "point")) == int(digits.attrs["data-pareto"]) == len(DIGITS_FRONT)
    assert [text_of(node) for node in traces[-1].find("text")] == ["int8", "int8", "fp32"]  # front labels, fastest first
    assert any("source model" in text_of(node) for node in digits.find("g", "annotation"))
    assert len(plots[2].find("g", "scatterlayer")[0].find("path", "point")) == 6  # every ok cell with a size
    bars = plots[3].find("g", "barlayer")[0]
    assert len(bars.find("g", "trace")) == 3 and len(bars.find("g", "point")) == 5  # recipes × targets present

    (grid,) = [node for node in dom.find("table") if node.attrs.get("id") == "grid"]
    assert len(grid.find("tbody")[0].find("tr")) == len(ROWS)
    assert [text_of(node.find("td")[2]) for node in grid.find("tr", "failed")] == [HOSTILE]  # shown as text
    assert not any(text_of(node).strip().startswith("alert(") for node in dom.find("script"))  # never run as a script


def test_chromium_screenshot_is_a_drawn_page(report, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    shot = tmp_path / "report.png"
    browse(report, tmp_path / "profile", f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}")
    with Image.open(shot) as image:
        assert image.size == WINDOW
        pixels = image.convert("RGB")
    colours = dict((colour, count) for count, colour in pixels.getcolors(WINDOW[0] * WINDOW[1]))
    drawn = sum(count for colour, count in colours.items() if colour != (255, 255, 255))
    assert len(colours) > 100 and drawn > 0.03 * WINDOW[0] * WINDOW[1]
    assert colours.get((0x1F, 0x77, 0xB4), 0) > 50  # the first target's markers
    assert colours.get((0xFD, 0xE7, 0xEA), 0) > 1000  # the failed row's background
