"""Each reliability test's outcome joins the tally, which is written where EDGEKIT_RELIABILITY_FIGURES says."""

from __future__ import annotations

import os
from pathlib import Path

from reliability.figures import FIGURES_ENV, TALLY


def pytest_runtest_logreport(report) -> None:
    if report.when == "call" or report.outcome != "passed":
        outcome = f"xfailed ({report.wasxfail})" if hasattr(report, "wasxfail") and report.skipped else report.outcome
        if report.when == "call" or TALLY.tests.get(report.nodeid) in (None, "passed"):
            TALLY.tests[report.nodeid] = outcome if report.when == "call" else f"{outcome} in {report.when}"


def pytest_sessionfinish(session, exitstatus) -> None:
    path = os.environ.get(FIGURES_ENV)
    if path:
        TALLY.write(Path(path))
