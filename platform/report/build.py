"""`anomalyr1 report FOLDER [--out FILE.html]`: read, render, write."""

from __future__ import annotations

from pathlib import Path

from anomalyr1.platform.report.page import render
from anomalyr1.platform.report.run import read_run

REPORT_FILE = "report.html"


def write_report(folder: str | Path, out: str | Path | None = None, masks: str | Path | None = None) -> Path:
    """Writes the report of a run or eval folder to `out` (default: FOLDER/report.html), with
    an eval folder's SAM2 masks from `masks` (see read_run)."""
    run = read_run(folder, masks)
    target = Path(out).expanduser() if out else run.folder / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(run), encoding="utf-8")
    return target
