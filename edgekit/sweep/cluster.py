"""Ray for the sweep: start a local cluster (this machine's CPU advertised as device `local`) or join one, check that
the devices asked for are advertised by some node, and run cells as tasks: compiles anywhere a CPU is free, each in a
worker process of its own; measurements on the node that holds the cell's device, one at a time per device."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from edgekit.errors import UserError
from edgekit.sweep.cell import compile_cell, measure_cell, recipe_distills
from edgekit.sweep.grid import LOCAL_DEVICE, Cell, Settings

DEVICE_RESOURCE = "device:"


@dataclass(frozen=True, slots=True)
class Cluster:
    """The Ray cluster the sweep runs on."""

    address: str  # "local" when edgekit started it
    cpus: int
    nodes: int
    devices: dict[str, float]  # device name → how many nodes' worth are advertised
    ray_version: str


@contextmanager
def connected(address: str | None, workers: int | None, verbose: bool) -> Iterator[Cluster]:
    """A Ray cluster for the sweep's lifetime: joined at `address`, or started here with `workers` CPUs (default:
    this machine's) and the resource `device:local`; a cluster started here is shut down afterwards."""
    import ray

    quiet = {"include_dashboard": False, "log_to_driver": verbose,
             "logging_level": logging.INFO if verbose else logging.ERROR}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # address="local": a new cluster of our own, never one that happens to run here (or that RAY_ADDRESS names)
            ray.init(address="local", num_cpus=workers or os.cpu_count() or 1,
                     resources={f"{DEVICE_RESOURCE}{LOCAL_DEVICE}": 1}, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise UserError(f"sweep: cannot start or join {where}: {str(error).strip().splitlines()[0]}") from None
    try:
        resources = ray.cluster_resources()
        yield Cluster(address or "local", int(resources.get("CPU", 0)), len([n for n in ray.nodes() if n["Alive"]]),
                      {key[len(DEVICE_RESOURCE):]: value for key, value in resources.items()
                       if key.startswith(DEVICE_RESOURCE)}, ray.__version__)
    finally:
        ray.shutdown()


def check_devices(cluster: Cluster, devices: tuple[str, ...]) -> None:
    """Every device asked for must be advertised by a node (else its tasks would wait forever)."""
    missing = [device for device in devices if device not in cluster.devices]
    if missing:
        known = ", ".join(sorted(cluster.devices)) or "none"
        raise UserError(f"sweep: no node of the Ray cluster ({cluster.address}) advertises device {missing[0]}; "
                        f"start one with `ray start --address ... --resources '{{\"{DEVICE_RESOURCE}{missing[0]}\": 1}}'`"
                        f" (devices advertised: {known})")


class Board:
    """Which tasks have started, as "CELL PHASE" (told by the tasks themselves), for the progress line."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def start(self, cell_id: str) -> None:
        self.ids.add(cell_id)

    def started(self) -> set[str]:
        return self.ids


def new_board() -> Any:
    import ray

    return ray.remote(num_cpus=0)(Board).remote()


def submit_compile(board: Any, cell: Cell, settings: Settings, cache_dir: str | None) -> Any:
    """The compile task's ObjectRef; several CPUs for a recipe that distills on several processes."""
    processes = settings.distill_processes if settings.distill_processes > 1 and recipe_distills(cell) else 1
    task = _remote(_compile_task).options(num_cpus=processes, name=f"compile {cell.id}")
    return task.remote(board, cell, settings, cache_dir)


def submit_measure(board: Any, cell: Cell, settings: Settings, package: Any, devices_file: str | None) -> Any:
    """The measuring task's ObjectRef, placed on a node advertising the cell's device; it holds the device alone
    and, measuring on that node's CPU, as many CPUs as it runs threads."""
    remote = cell.device != LOCAL_DEVICE and devices_file is not None and _listed(cell.device, devices_file)
    task = _remote(_measure_task).options(num_cpus=0 if remote else settings.threads,
                                            resources={f"{DEVICE_RESOURCE}{cell.device}": 1}, name=f"measure {cell.id}")
    return task.remote(board, cell, settings, package, devices_file)


@cache
def _remote(function: Callable[..., Any]) -> Any:
    """The function as a Ray task, made once (Ray exports it to the workers on first use); each call in a worker
    process of its own (`max_calls=1`), never retried."""
    import ray

    return ray.remote(max_calls=1, max_retries=0)(function)


def _compile_task(board: Any, cell: Cell, settings: Settings, cache_dir: str | None) -> dict[str, Any]:
    board.start.remote(f"{cell.id} compile")
    return compile_cell(cell, settings, cache_dir)


def _measure_task(board: Any, cell: Cell, settings: Settings, package: bytes, devices_file: str | None) -> dict[str, Any]:
    board.start.remote(f"{cell.id} measure")
    return measure_cell(cell, settings, package, devices_file)


def _listed(device: str, devices_file: str) -> bool:
    from pathlib import Path

    from edgekit.devices import load_devices

    return device in load_devices(Path(devices_file))
