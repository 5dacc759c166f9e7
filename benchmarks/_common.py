"""Helpers the benchmarks share: timing, and running an operator's execute as one task instance
(the tests' own ``run_task``, so benchmarks and tests drive operators the same way)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.task_process import run_task  # noqa: E402

__all__ = ["RESULT", "measure_in_child", "run_task", "timed"]

#: How a benchmark's child process prints its answer, among whatever else Airflow and Spark print.
RESULT = "benchmark result: "


def timed(action) -> float:
    """Seconds ``action()`` takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure_in_child(script: str, worker_args: list[str]) -> dict:
    """Run ``script --worker ARGS`` in a child process: its answer (the ``RESULT`` line it prints as JSON)
    and its peak RSS, children (a JVM) included. Output goes to a file, not a pipe: task logs would
    fill a pipe and block the child."""
    import psutil

    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen([sys.executable, script, "--worker", *worker_args], stdout=log, text=True)
        process, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                tree = [process, *process.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)
        log.seek(0)
        output = log.read()
    if child.returncode != 0:
        raise SystemExit(f"worker {worker_args} failed")
    (answer,) = [line[len(RESULT):] for line in output.splitlines() if line.startswith(RESULT)]
    return {**json.loads(answer), "peak_mb": peak / 2**20}
