"""The static HTML report of a sweep: one self-contained file (plotly's JS inlined once) that opens offline.

Sections: the header (what, when, where, counts); per model latency p50 vs quality with its Pareto front; size vs
latency; per model p50 per target grouped by recipe; the grid as a table with every cell, failed ones included.
Every string from a row or the sweep is HTML-escaped, in the page and inside the plots' data.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.sweep.results import pareto_front, write_atomic

MIB = 2**20
LOG_SPREAD = 10  # an axis turns logarithmic when its largest value is more than this many times its smallest
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
SYMBOLS = ("circle", "triangle-up", "diamond", "square", "x", "star", "hexagon", "cross", "pentagon", "bowtie")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
dl.ek-facts { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.ek-facts dt { font-weight: 600; }
.ek-counts span { margin-right: 1.2em; font-weight: 600; }
.ek-counts .failed { color: #b00020; }
.ek-plot { margin: 1em 0; border: 1px solid #ddd; }
.ek-empty { color: #666; font-style: italic; }
table#grid { border-collapse: collapse; font-size: 13px; }
table#grid th, table#grid td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
table#grid td.num { text-align: right; font-variant-numeric: tabular-nums; }
table#grid tr.failed { background: #fde7ea; }
table#grid tr.failed td.status { color: #b00020; font-weight: 600; }
table#grid tr.pareto td.star { color: #c58a00; }
"""


@dataclass(frozen=True, slots=True)
class Plot:
    """One figure and the data attributes its wrapper div carries (for readers and tests)."""

    kind: str
    figure: object
    attributes: dict[str, str] = field(default_factory=dict)


def write_report(rows: list[dict], sweep: dict, path: Path) -> Path:
    """Write the report of these rows to path (atomically) and return path."""
    path = Path(path)
    return write_atomic(path, render_report(rows, sweep))


def render_report(rows: list[dict], sweep: dict) -> str:
    """The whole page as text."""
    members = front_members(rows)
    models = _distinct(row["model"] for row in rows)
    pareto = [_pareto_plot(model, [(i, rows[i]) for i in range(len(rows)) if rows[i]["model"] == model], members)
              for model in models]
    size = _size_plot(rows, models)
    bars = [_bars_plot(model, [row for row in rows if row["model"] == model]) for model in models]
    if all(plot is None for plot in [*pareto, size, *bars]):
        body = '<p class="ek-empty" id="nothing">Nothing to plot: no cell finished with a measured latency.</p>'
    else:
        render = _renderer()
        body = "\n".join([
            "<h2>Latency vs quality</h2>", *_each(pareto, models, render, "no ok cell with both latency and quality"),
            "<h2>Size vs latency</h2>", render(size) if size else '<p class="ek-empty">No ok cell with a size.</p>',
            "<h2>Latency per target</h2>", *_each(bars, models, render, "no ok cell with a latency"),
        ])
    return "\n".join([
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
        f"<title>edgekit sweep — {_text(sweep.get('started'))}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        _header(rows, sweep), body, "<h2>Grid</h2>", _table(rows, members), "</body>\n</html>\n",
    ])


def front_members(rows: list[dict]) -> set[int]:
    """Indices into rows of the cells on their model's Pareto front (ok cells with latency and quality)."""
    members: set[int] = set()
    for model in _distinct(row["model"] for row in rows):
        plotted = [i for i, row in enumerate(rows) if row["model"] == model and _quality_point(row)]
        front = pareto_front([_quality_point(rows[i]) for i in plotted])
        members.update(plotted[i] for i in front)
    return members


def _renderer() -> Callable[[Plot], str]:
    """A function that turns a Plot into its div; the first call inlines plotly's JS, later ones reuse it."""
    count = 0

    def render(plot: Plot) -> str:
        nonlocal count
        count += 1
        attributes = "".join(f' data-{name}="{_attr(value)}"' for name, value in plot.attributes.items())
        inner = plot.figure.to_html(full_html=False, include_plotlyjs=count == 1, div_id=f"ek-{plot.kind}-{count}",
                                    config={"displaylogo": False}, default_width="100%", default_height="480px")
        return f'<div class="ek-plot" id="plot-{count}" data-kind="{plot.kind}"{attributes}>\n{inner}\n</div>'

    return render


def _each(plots: list[Plot | None], models: list[str], render: Callable[[Plot], str], missing: str) -> list[str]:
    return [render(plot) if plot else f'<p class="ek-empty">{_text(model)}: {missing}.</p>'
            for plot, model in zip(plots, models)]


def _header(rows: list[dict], sweep: dict) -> str:
    models, targets, recipes = (_distinct(row[key] for row in rows) for key in ("model", "target", "recipe"))
    what = (f"{len(models)} model(s) × {len(targets)} target(s) × {len(recipes)} recipe(s) = "
            f"{_text(sweep.get('cells', len(rows)))} cells")
    facts = {"models": ", ".join(models), "targets": ", ".join(targets), "recipes": ", ".join(recipes),
             "started": sweep.get("started"), "finished": sweep.get("finished"), "cpu": sweep.get("cpu"),
             "isa": sweep.get("isa"), "workers": sweep.get("workers"), "ray": sweep.get("ray"),
             "edgekit": sweep.get("edgekit"), "command": sweep.get("command")}
    listed = "".join(f"<dt>{name}</dt><dd>{_text(value)}</dd>" for name, value in facts.items())
    counts = "".join(f'<span class="{name}">{name} {_text(sweep.get(name))}</span>' for name in ("ok", "failed", "reused"))
    return (f'<header id="summary"><h1>edgekit sweep</h1><p class="ek-what">{what}</p>'
            f'<p class="ek-counts">{counts}</p><dl class="ek-facts">{listed}</dl></header>')


def _pareto_plot(model: str, indexed: list[tuple[int, dict]], members: set[int]) -> Plot | None:
    import plotly.graph_objects as go

    plotted = [(i, row) for i, row in indexed if _quality_point(row)]
    if not plotted:
        return None
    figure = go.Figure()
    precisions = _symbol_map(row["precision"] for _, row in indexed)
    for (target, precision), group in _groups([row for _, row in plotted], ("target", "precision")).items():
        figure.add_scatter(x=[_p50(row) for row in group], y=[row["quality"] for row in group], mode="markers",
                           name=_text(f"{target} · {precision or '?'}"), legendgroup=_text(target),
                           marker={"color": _colour(target, indexed), "symbol": precisions[precision], "size": 10},
                           text=[_hover(row) for row in group], hoverinfo="text")
    front = sorted((row for i, row in plotted if i in members), key=_p50)
    figure.add_scatter(x=[_p50(row) for row in front], y=[row["quality"] for row in front], mode="lines+markers+text",
                       name="Pareto front", text=[_text(_recipe_label(row)) for row in front], textposition="top center",
                       line={"color": "#444", "width": 1.5},
                       marker={"symbol": "circle-open", "size": 18, "color": "#444", "line": {"width": 2}},
                       hovertext=[_hover(row) for row in front], hoverinfo="text")
    for reference in _distinct(row["reference_quality"] for _, row in indexed if _finite(row["reference_quality"])):
        figure.add_hline(y=reference, line_dash="dash", line_color="#888",
                         annotation_text=f"source model {_quality(reference)}", annotation_position="bottom right")
    metric = ", ".join(_distinct(row["quality_metric"] for _, row in plotted if row["quality_metric"])) or "quality"
    figure.update_layout(title=_text(f"{model}: latency vs {metric}"), template="plotly_white",
                         xaxis={"title": "latency p50 (ms)", "type": _axis_type([_p50(row) for _, row in plotted])},
                         yaxis={"title": _text(metric)}, legend={"title": "target · precision"})
    return Plot("pareto", figure, {"model": model, "points": str(len(plotted)), "pareto": str(len(front)),
                                   "traces": str(len(figure.data))})


def _size_plot(rows: list[dict], models: list[str]) -> Plot | None:
    import plotly.graph_objects as go

    plotted = [row for row in rows if _p50(row) is not None and _finite(row["size_bytes"])]
    if not plotted:
        return None
    figure = go.Figure()
    precisions = _symbol_map(row["precision"] for row in rows)
    for model, group in _groups(plotted, ("model",)).items():
        figure.add_scatter(x=[_p50(row) for row in group], y=[row["size_bytes"] / MIB for row in group],
                           mode="markers", name=_text(model[0]), text=[_hover(row) for row in group], hoverinfo="text",
                           marker={"color": COLOURS[models.index(model[0]) % len(COLOURS)], "size": 10,
                                   "symbol": [precisions[row["precision"]] for row in group]})
    figure.update_layout(title="size vs latency (marker: precision)", template="plotly_white", legend={"title": "model"},
                         xaxis={"title": "latency p50 (ms)", "type": _axis_type([_p50(row) for row in plotted])},
                         yaxis={"title": "size (MiB)", "type": _axis_type([row["size_bytes"] for row in plotted])})
    return Plot("size", figure, {"points": str(len(plotted))})


def _bars_plot(model: str, rows: list[dict]) -> Plot | None:
    import plotly.graph_objects as go

    plotted = [row for row in rows if _p50(row) is not None]
    if not plotted:
        return None
    figure = go.Figure()
    for (recipe,), group in _groups(plotted, ("recipe",)).items():
        latency = [row["latency_ms"] for row in group]
        above = [_gap(item.get("p50_high"), item["p50"]) for item in latency]
        below = [_gap(item["p50"], item.get("p50_low")) for item in latency]
        figure.add_bar(x=[_text(_target_label(row)) for row in group], y=[item["p50"] for item in latency],
                       name=_text(recipe), text=[_hover(row) for row in group], hoverinfo="text", textposition="none",
                       error_y={"type": "data", "array": above, "arrayminus": below, "visible": any(above + below)})
    figure.update_layout(title=_text(f"{model}: latency p50 per target (error bars: p50 interval)"), barmode="group",
                         template="plotly_white", legend={"title": "recipe"},
                         xaxis={"title": "target"}, yaxis={"title": "latency p50 (ms)"})
    return Plot("bars", figure, {"model": model, "bars": str(len(plotted))})


COLUMNS: tuple[tuple[str, str, Callable[[dict], str]], ...] = (
    ("cell", "", lambda row: _text(row["cell"])),
    ("model", "", lambda row: _text(row["model"])),
    ("target", "", lambda row: _text(row["target"])),
    ("recipe", "", lambda row: _text(_recipe_label(row))),
    ("precision", "", lambda row: _text(row["precision"])),
    ("device", "", lambda row: _text(row["device"])),
    ("node", "", lambda row: _text(row["node"])),
    ("status", "status", lambda row: _text(row["status"]) + (" (reused)" if row["reused"] else "")),
    ("p50 ms", "num", lambda row: _ms(_p50(row))),
    ("p50 interval ms", "num", lambda row: _interval(row["latency_ms"])),
    ("p90 ms", "num", lambda row: _ms((row["latency_ms"] or {}).get("p90"))),
    ("quality", "num", lambda row: _quality(row["quality"])),
    ("metric", "", lambda row: _text(row["quality_metric"])),
    ("source", "num", lambda row: _quality(row["reference_quality"])),
    ("fidelity", "num", lambda row: _fidelity(row["fidelity"])),
    ("size MiB", "num", lambda row: _mib(row["size_bytes"])),
    ("peak RSS MiB", "num", lambda row: _number(row["peak_rss_mb"], 2)),
    ("compile s", "num", lambda row: _number(row["compile_s"], 1)),
    ("measure s", "num", lambda row: _number(row["measure_s"], 1)),
    ("package", "", lambda row: _text(row["package"])),
    ("reason", "reason", lambda row: _text(row["reason"])),
)


def _table(rows: list[dict], members: set[int]) -> str:
    head = '<th title="on its model\'s Pareto front">★</th>' + "".join(f"<th>{name}</th>" for name, _, _ in COLUMNS)
    lines = []
    for i, row in enumerate(rows):
        marks = [name for name, on in (("failed", row["status"] != "ok"), ("pareto", i in members)) if on]
        cells = "".join(f'<td class="{kind}">{value(row)}</td>' if kind else f"<td>{value(row)}</td>"
                        for _, kind, value in COLUMNS)
        star = "★" if i in members else ""
        lines.append(f'<tr class="{" ".join(marks)}" data-cell="{_attr(row["cell"])}"><td class="star">{star}</td>{cells}</tr>')
    body = "\n".join(lines) or f'<tr><td colspan="{len(COLUMNS) + 1}" class="ek-empty">no cells</td></tr>'
    return f'<table id="grid">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _hover(row: dict) -> str:
    """Hover text of one cell: escaped values in plotly's small HTML subset."""
    latency = row["latency_ms"] or {}
    lines = [f"<b>{_text(row['cell'])}</b>", f"recipe: {_text(_recipe_label(row))}, precision {_text(row['precision'])}",
             f"p50 {_ms(latency.get('p50'))} ms [{_interval(latency)}], p90 {_ms(latency.get('p90'))} ms",
             f"{_text(row['quality_metric'] or 'quality')} {_quality(row['quality'])} (source {_quality(row['reference_quality'])})",
             f"size {_mib(row['size_bytes'])} MiB, peak RSS {_number(row['peak_rss_mb'], 2)} MiB",
             f"on {_text(row['device'])} {_text(row['node'] or '')}" + (" (reused)" if row["reused"] else "")]
    return "<br>".join(lines)


def _quality_point(row: dict) -> tuple[float, float] | None:
    p50 = _p50(row)
    return (p50, row["quality"]) if p50 is not None and _finite(row["quality"]) else None


def _p50(row: dict) -> float | None:
    """The cell's p50 latency when it is ok and measured, else None (not plotted)."""
    value = (row["latency_ms"] or {}).get("p50") if row["status"] == "ok" else None
    return value if _finite(value) else None


def _recipe_label(row: dict) -> str:
    chosen = row["chosen"]
    return row["recipe"] if not chosen or chosen == row["recipe"] else f"{row['recipe']} → {chosen}"


def _target_label(row: dict) -> str:
    return row["target"] if row["device"] in (None, "local") else f"{row['target']}@{row['device']}"


def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    return groups


def _colour(target: str, indexed: list[tuple[int, dict]]) -> str:
    targets = sorted(_distinct(row["target"] for _, row in indexed), key=str)
    return COLOURS[targets.index(target) % len(COLOURS)]


def _symbol_map(precisions: Iterable[str | None]) -> dict[str | None, str]:
    ordered = sorted(_distinct(precisions), key=lambda value: (value is None, str(value)))
    return {precision: SYMBOLS[i % len(SYMBOLS)] for i, precision in enumerate(ordered)}


def _axis_type(values: list[float]) -> str:
    positive = [value for value in values if value > 0]
    return "log" if positive and max(positive) > LOG_SPREAD * min(positive) else "linear"


def _gap(high: object, low: object) -> float:
    return max(high - low, 0.0) if _finite(high) and _finite(low) else 0.0


def _distinct(values: Iterable) -> list:
    return list(dict.fromkeys(value for value in values if value is not None))


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ms(value: object) -> str:
    """Milliseconds to 3 significant digits, never in scientific notation (1234.5 → 1230, 0.012345 → 0.0123)."""
    if not _finite(value):
        return "—"
    if value == 0:
        return "0"
    decimals = 2 - math.floor(math.log10(abs(value)))
    return f"{round(value, decimals):.{max(decimals, 0)}f}"


def _interval(latency: dict | None) -> str:
    latency = latency or {}
    low, high = latency.get("p50_low"), latency.get("p50_high")
    return f"{_ms(low)}–{_ms(high)}" if _finite(low) and _finite(high) else "—"


def _quality(value: object) -> str:
    return _number(value, 4)


def _mib(size: object) -> str:
    return _number(size / MIB, 2) if _finite(size) else "—"


def _fidelity(fidelity: dict | None) -> str:
    if not fidelity:
        return "—"
    worst = f" (worst {_quality(fidelity.get('worst'))})" if _finite(fidelity.get("worst")) else ""
    return f"{_text(fidelity.get('metric'))} {_quality(fidelity.get('value'))}{worst}"


def _number(value: object, decimals: int) -> str:
    return f"{value:.{decimals}f}" if _finite(value) else "—"


def _text(value: object) -> str:
    """Escaped text for element content and plotly strings (plotly decodes &lt; &gt; &amp; back for display)."""
    return "—" if value is None else html.escape(str(value), quote=False)


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)
