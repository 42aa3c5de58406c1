"""An edgekit package against what a user does by hand with the peers, in one process, at equal threads.

Every contender (the package and each peer: ORT on the original ONNX, ORT's quantize_static, OpenVINO's
defaults, NNCF's quantize, LiteRT on a .tflite) is loaded first; then `rounds` rounds time each in a
rotating order (`warmup` untimed, `runs` timed runs on the first eval sample); p50 is over every timed
run. Each contender's task score comes from the zoo model's own `task`; a peer is *eligible* when its
score is at least the source model's own minus `TOLERANCE` (the bar the package must keep too), and
`ratio` is the fastest eligible peer's p50 over the package's (> 1: edgekit is faster).

    python benchmarks/peers.py MODEL PACKAGE [--threads 1 --rounds 5 --runs 30]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from benchmarks.zoo import ZooModel

Feed = dict[str, np.ndarray]
Runner = Callable[[Feed], list[np.ndarray]]
TOLERANCE = 0.01  # eligible: task value ≥ the source model's own − TOLERANCE (absolute, every metric)
VERSIONED = ("edgekit", "onnxruntime", "openvino", "nncf", "ai-edge-litert", "torch", "onnx", "numpy")


@dataclass
class Setup:
    """What the peers share: the source, its io names, the eval feed, calibration feeds and a work folder."""

    source: str
    specs: tuple[str, ...]  # --input strings
    inputs: list[str]  # input names, in the model's order
    outputs: list[str]  # output names, in the model's order
    feed: Feed
    calib: list[Feed]
    threads: int
    work: Path
    module: Any = None  # the nn.Module of a torch source
    _onnx: Path | BaseException | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        if ".py:" in self.source or Path(self.source).is_dir():  # a factory or a Hugging Face folder: a PyTorch module
            return "torch"
        return Path(self.source).suffix.lower().lstrip(".")

    def onnx(self) -> Path:
        """The ONNX a user runs: the source itself, or a torch source exported with torch.onnx.export(dynamo=True)."""
        if self._onnx is None:
            try:
                self._onnx = self._make_onnx()
            except Exception as error:  # remembered: every ONNX peer reports the same failure
                self._onnx = error
        if isinstance(self._onnx, BaseException):
            raise self._onnx
        return self._onnx

    def _make_onnx(self) -> Path:
        if self.kind == "onnx":
            return Path(self.source)
        if self.kind == "tflite":
            raise Refused("ONNX Runtime does not read .tflite")
        if self.kind != "torch":
            raise Refused(f"no ONNX for a .{self.kind} source")
        import torch

        path = self.work / "exported.onnx"
        example = tuple(torch.from_numpy(np.array(self.feed[name])) for name in self.inputs)
        try:
            torch.onnx.export(self.module.eval(), example, str(path), dynamo=True, input_names=self.inputs, output_names=self.outputs)
        except Exception as error:
            raise Refused(f"torch.onnx.export(dynamo=True) failed: {_line(error)}") from error
        return path


class Refused(RuntimeError):
    """A peer that cannot run this model, for a reason stated in one line."""


def _line(error: BaseException) -> str:
    """One line for a row's error."""
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return (first if isinstance(error, Refused) else f"{type(error).__name__}: {first}")[:300]


def _order(names: list[set[str]], wanted: list[str], what: str) -> list[int]:
    """For each wanted name, the index of the runtime tensor answering to it: by name where all match, else by position."""
    found = [next((i for i, aliases in enumerate(names) if name in aliases), None) for name in wanted]
    if all(i is not None for i in found) and len(set(found)) == len(found):
        return found  # type: ignore[return-value]
    if len(names) != len(wanted):
        raise RuntimeError(f"{len(names)} {what}s in the runtime, {len(wanted)} in the model")
    return list(range(len(wanted)))


# --- peers: each returns a Runner or raises with the reason -------------------------------------------------------------


def _ort_runner(path: Path, setup: Setup) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = setup.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ins = [i.name for i in session.get_inputs()]
    keys = [ins[i] for i in _order([{n} for n in ins], setup.inputs, "input")]
    outs = [o.name for o in session.get_outputs()]
    picks = _order([{n} for n in outs], setup.outputs, "output")

    def run(feed: Feed) -> list[np.ndarray]:
        got = session.run(None, {key: feed[name] for key, name in zip(keys, setup.inputs)})
        return [got[i] for i in picks]

    return run


def ort_original(setup: Setup) -> Runner:
    """ONNX Runtime, CPU EP, default session options but the thread counts, on the original (or exported) ONNX."""
    return _ort_runner(setup.onnx(), setup)


def ort_quantize_static(setup: Setup) -> Runner:
    """onnxruntime.quantization.quantize_static with its defaults over the calibration feeds."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    onnx_path = setup.onnx()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds: Iterator[Feed] = iter(setup.calib)

        def get_next(self) -> Feed | None:
            return next(self.feeds, None)

    quantized = setup.work / "ort_quantized.onnx"
    quantize_static(str(onnx_path), str(quantized), Reader())
    return _ort_runner(quantized, setup)


def _ov_model(setup: Setup):
    import openvino as ov

    path = Path(setup.source) if setup.kind == "tflite" else setup.onnx()
    return ov.convert_model(str(path))


def _ov_keys(model, setup: Setup) -> list[int]:
    """Positions of the ov.Model inputs for the model's input names."""
    return _order([set(p.get_names()) for p in model.inputs], setup.inputs, "input")


def _ov_runner(model, setup: Setup) -> Runner:
    import openvino as ov

    from edgekit.runtime.openvino import execution_precision

    positions = _ov_keys(model, setup)
    picks = _order([set(p.get_names()) for p in model.outputs], setup.outputs, "output")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": setup.threads})
    request = compiled.create_infer_request()

    def run(feed: Feed) -> list[np.ndarray]:
        got = request.infer({p: feed[name] for p, name in zip(positions, setup.inputs)})
        return [got[compiled.outputs[i]] for i in picks]

    run.precision = execution_precision(compiled)  # type: ignore[attr-defined]
    return run


def openvino_default(setup: Setup) -> Runner:
    """ov.convert_model on the .onnx/.tflite, compiled for CPU with only the thread count (no precision hint)."""
    return _ov_runner(_ov_model(setup), setup)


def nncf_quantize(setup: Setup) -> Runner:
    """nncf.quantize(ov_model, nncf.Dataset(calibration feeds)) with defaults, compiled as openvino-default."""
    import nncf

    model = _ov_model(setup)
    positions = _ov_keys(model, setup)
    data = [{p: feed[name] for p, name in zip(positions, setup.inputs)} for feed in setup.calib]
    return _ov_runner(nncf.quantize(model, nncf.Dataset(data)), setup)


def litert_default(setup: Setup) -> Runner:
    """LiteRT's Interpreter(model_path, num_threads) on the original .tflite (XNNPACK by default)."""
    if setup.kind != "tflite":
        raise Refused("LiteRT runs .tflite sources only")
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.runtime.tflite import detail_names

    interpreter = Interpreter(model_path=setup.source, num_threads=setup.threads)
    ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
    positions = _order([detail_names(d) for d in ins], setup.inputs, "input")
    picks = _order([detail_names(d) for d in outs], setup.outputs, "output")
    for position, name in zip(positions, setup.inputs):
        if tuple(ins[position]["shape"]) != setup.feed[name].shape:
            interpreter.resize_tensor_input(ins[position]["index"], list(setup.feed[name].shape))
    interpreter.allocate_tensors()

    def run(feed: Feed) -> list[np.ndarray]:
        for position, name in zip(positions, setup.inputs):
            detail = ins[position]
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(feed[name], detail["dtype"]))
        interpreter.invoke()
        return [interpreter.get_tensor(outs[i]["index"]).copy() for i in picks]

    return run


PEERS: dict[str, Callable[[Setup], Runner]] = {
    "ort-original": ort_original,
    "ort-quantize-static": ort_quantize_static,
    "openvino-default": openvino_default,
    "nncf-quantize": nncf_quantize,
    "litert-default": litert_default,
}


def edgekit_runner(package: Path, threads: int) -> tuple[Runner, str]:
    """The package loaded by edgekit's runtime; (runner, note naming its target, recipe and precision)."""
    from edgekit.package import read_package
    from edgekit.runtime import load

    session = load(package, threads=threads)
    names = [spec.name for spec in session.outputs]
    manifest = read_package(package).manifest

    def run(feed: Feed) -> list[np.ndarray]:
        got = session.run(feed)
        return [got[name] for name in names]

    recipe = manifest.recipe
    note = (f"{manifest.target.name} {recipe.get('name', '?')}, "
            f"{manifest.precision}, float ops {session.execution_precision}")
    return run, note


# --- measurement -------------------------------------------------------------------------------------------------------


def _feeds(path: Path, names: list[str], ranks: dict[str, int]) -> list[Feed]:
    """Every sample of an .npz (leading sample axis) as a feed with the model's batch shape."""
    with np.load(path) as data:
        arrays = {name: data[name] for name in names}
    count = min(len(array) for array in arrays.values())

    def sample(array: np.ndarray, i: int, rank: int) -> np.ndarray:
        return array[i:i + 1] if array.ndim == rank else array[i]  # a sample without / with its batch axis

    return [{name: sample(arrays[name], i, ranks[name]) for name in names} for i in range(count)]


def _setup(model: ZooModel, threads: int, work: Path) -> Setup:
    from edgekit.ingest import ingest
    from edgekit.spec import parse_input_spec

    ingested = ingest(model.source, tuple(parse_input_spec(text) for text in model.inputs))
    names = [spec.name for spec in ingested.inputs]
    ranks = {spec.name: len(spec.shape) for spec in ingested.inputs}
    feed = _feeds(model.eval, names, ranks)[0]
    return Setup(model.source, model.inputs, names, [spec.name for spec in ingested.outputs], feed,
                 _feeds(model.calib, names, ranks), threads, work, module=ingested.module)


SETTLE_S = 0.1  # idle before each contender's batch: the previous runtime's worker threads stop spinning


def _time(run: Runner, feed: Feed, warmup: int, runs: int) -> list[float]:
    time.sleep(SETTLE_S)  # with nine runtimes in one process, a 1.3 ms LiteRT model timed 25% slower right after others
    for _ in range(warmup):
        run(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(feed)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def compare(model: ZooModel, package: Path | list[Path], threads: int = 1, rounds: int = 5, runs: int = 30,
            warmup: int = 5) -> dict:
    """Time and score the package(s) and every peer on `model`'s first eval sample; see the module docstring.

    Several packages (auto's finalists) are timed in the same rounds; the fastest that keeps the task is edgekit's entry.
    """
    packages = [Path(p) for p in package] if isinstance(package, list) else [Path(package)]
    from edgekit.isa import host_cpu

    rows: list[dict] = []
    runners: dict[str, Runner] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-peers-") as folder:
        setup = _setup(model, threads, Path(folder))
        makers: list[tuple[str, str, Callable[[], tuple[Runner, str]]]] = [
            (f"edgekit {index + 1}" if len(packages) > 1 else "edgekit", "edgekit",
             lambda path=path: edgekit_runner(path, threads)) for index, path in enumerate(packages)]
        for name, peer in PEERS.items():
            if name == "litert-default" and setup.kind != "tflite":
                continue
            makers.append((name, "peer", lambda peer=peer: (peer(setup), "")))
        for name, kind, make in makers:
            row: dict[str, Any] = {"name": name, "kind": kind, "p50_ms": None, "task": None, "eligible": False}
            rows.append(row)
            try:
                run, note = make()
                run(setup.feed)
                precision = getattr(run, "precision", None)
                row["note"] = note or (f"float ops {precision}" if precision else "")
                runners[name] = run
            except Exception as error:
                row["error"] = _line(error)
        times: dict[str, list[float]] = {name: [] for name in runners}
        order = list(runners)
        for round_index in range(rounds):
            shift = round_index % max(len(order), 1)
            for name in order[shift:] + order[:shift]:
                times[name] += _time(runners[name], setup.feed, warmup, runs)
        for row in rows:
            name = row["name"]
            if name not in runners:
                continue
            row["p50_ms"] = float(np.median(times[name])) if times[name] else None
            try:
                score = model.task(runners[name])
                row["task"] = {"metric": score.metric, "value": float(score.value)}
            except Exception as error:
                row["error"] = f"task: {_line(error)}"
        feed_shapes = {name: {"shape": list(array.shape), "dtype": str(array.dtype)} for name, array in setup.feed.items()}
    bar = model.task(model.reference).value - TOLERANCE
    return _judge(model.name, rows, bar, {
        "threads": threads, "rounds": rounds, "runs": runs, "warmup": warmup, "cpu": host_cpu().to_dict(),
        "versions": _versions(), "feed": feed_shapes, "source": model.source, "packages": [str(p) for p in packages],
        "eligibility": f"task value ≥ the source model's own ({bar + TOLERANCE:.4f}) − {TOLERANCE}",
    })


def _judge(name: str, rows: list[dict], floor: float, conditions: dict) -> dict:
    """Mark who keeps the task (score ≥ `floor`) and the ratio of the fastest such peer's p50 to the fastest such
    edgekit package's."""
    result: dict[str, Any] = {"model": name, "conditions": conditions, "rows": rows, "best_peer": None, "ratio": None}
    for row in rows:
        row["eligible"] = row["p50_ms"] is not None and row["task"] is not None and row["task"]["value"] >= floor
    mine = min((row for row in rows if row["kind"] == "edgekit" and row["eligible"]), key=lambda row: row["p50_ms"],
               default=None)
    if mine is None:
        first = next(row for row in rows if row["kind"] == "edgekit")
        result["note"] = f"no edgekit package ran and kept the task bar {floor:.4f}: {first.get('error', '')}"
        return result
    result["edgekit"] = mine["name"]
    eligible = [row for row in rows if row["kind"] == "peer" and row["eligible"]]
    if not eligible:
        result["note"] = "no peer reaches the package's task accuracy"
        return result
    best = min(eligible, key=lambda row: row["p50_ms"])
    result["best_peer"], result["ratio"] = best["name"], best["p50_ms"] / mine["p50_ms"]
    return result


def table(result: dict) -> str:
    """A markdown table of `result` with its conditions as the caption."""
    c = result["conditions"]
    mine = next((row for row in result["rows"] if row["name"] == result.get("edgekit")),
                next(row for row in result["rows"] if row["kind"] == "edgekit"))
    feeds = ", ".join(f"{name} {'x'.join(map(str, f['shape']))} {f['dtype']}" for name, f in c["feed"].items())
    versions = ", ".join(f"{name} {version}" for name, version in c["versions"].items())
    lines = [
        f"**{result['model']}**: {c['threads']} thread(s), {c['rounds']} alternating rounds × ({c['warmup']} warm-up + "
        f"{c['runs']} timed runs) on the first eval sample ({feeds}); p50 over all timed runs. CPU: {c['cpu']['model']} "
        f"({c['cpu']['isa']}: {' '.join(c['cpu']['flags'])}). {versions}. Eligible: {c['eligibility']}.",
        "",
        "| contender | kind | p50 ms | × edgekit | task | eligible | note |",
        "|---|---|---:|---:|---|:-:|---|",
    ]
    for row in result["rows"]:
        p50 = row["p50_ms"]
        speed = f"{p50 / mine['p50_ms']:.2f}" if p50 is not None and mine["p50_ms"] else ""
        task = f"{row['task']['metric']} {row['task']['value']:.4g}" if row["task"] else ""
        note = row.get("error") or row.get("note", "")
        lines.append(f"| {row['name']} | {row['kind']} | {'' if p50 is None else f'{p50:.3f}'} | {speed} | {task} | "
                     f"{'yes' if row['eligible'] else 'no'} | {note.replace('|', '/')} |")
    ratio = result["ratio"]
    lines += ["", f"ratio (best eligible peer p50 / edgekit p50): {ratio:.2f} ({result['best_peer']})" if ratio is not None
              else f"ratio: none ({result.get('note', '')})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="zoo model name (benchmarks/zoo/<name>.py)")
    parser.add_argument("package", type=Path, help="edgekit package folder or .zip")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    zoo_model = importlib.import_module(f"benchmarks.zoo.{args.model}").build()
    print(table(compare(zoo_model, args.package, args.threads, args.rounds, args.runs, args.warmup)))


if __name__ == "__main__":
    main()
