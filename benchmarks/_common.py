"""Helpers the benchmarks share: timing, and running an operator's execute as one task instance
(the tests' own ``run_task``, so benchmarks and tests drive operators the same way)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.task_process import run_task  # noqa: E402

__all__ = ["run_task", "timed"]


def timed(action) -> float:
    """Seconds ``action()`` takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started
