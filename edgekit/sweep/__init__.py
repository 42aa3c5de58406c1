"""`edgekit sweep`: a grid of models × targets × recipes compiled and measured as Ray tasks, with a report."""

from __future__ import annotations

from edgekit.sweep.engine import Counts, SweepResult, sweep
from edgekit.sweep.grid import LOCAL_DEVICE, ModelEntry, Settings, model_entries

__all__ = ["LOCAL_DEVICE", "Counts", "ModelEntry", "Settings", "SweepResult", "model_entries", "sweep"]
