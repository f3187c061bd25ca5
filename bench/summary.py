"""The ``SUMMARY`` line every benchmark prints per headline figure, collected by ``bench/run_all.py``.

One JSON object per line after ``SUMMARY ``: figure, value, unit, baseline (text or null), ratio, goal
(text or null), met (true/false/null) and the load average over the run (``"4.1 → 4.6"``).
"""

from __future__ import annotations

import json
import os
from typing import Any

PREFIX = "SUMMARY "


def load_text(before: tuple[float, ...] | None = None, after: tuple[float, ...] | None = None) -> str:
    """The 1-minute load average at the start and the end of a run, as the table prints it."""
    after = after or os.getloadavg()
    return f"{before[0]:.1f} → {after[0]:.1f}" if before else f"{after[0]:.1f}"


def summary(
    figure: str,
    value: float,
    unit: str,
    *,
    baseline: str | None = None,
    ratio: float | None = None,
    goal: str | None = None,
    met: bool | None = None,
    load: str | None = None,
) -> dict[str, Any]:
    line = {
        "figure": figure,
        "value": round(value, 3),
        "unit": unit,
        "baseline": baseline,
        "ratio": None if ratio is None else round(ratio, 3),
        "goal": goal,
        "met": met,
        "load": load or load_text(),
    }
    print(PREFIX + json.dumps(line, ensure_ascii=False), flush=True)
    return line


def parse(stdout: str) -> list[dict[str, Any]]:
    """The SUMMARY objects in a benchmark's output, in order (malformed lines are skipped)."""
    out = []
    for line in stdout.splitlines():
        if line.startswith(PREFIX):
            try:
                obj = json.loads(line[len(PREFIX) :])
            except ValueError:
                continue
            if isinstance(obj, dict) and "figure" in obj:
                out.append(obj)
    return out
