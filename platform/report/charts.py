"""Curves over training steps, drawn by matplotlib as inline SVG (text kept as text: small,
searchable, no fonts or scripts to load)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

STAGES = ("timing/rollout_s", "timing/reward_s", "timing/learner_s", "timing/sync_s")
"""Drawn stacked: together they are most of a step."""


@dataclass(frozen=True)
class Chart:
    title: str
    keys: tuple[str, ...]
    stacked: bool = False


def chart_plan(keys: set[str]) -> list[Chart]:
    """Which charts a run's metrics allow, in reading order; a chart with no key present is left out."""
    terms = sorted(k for k in keys if k.startswith("reward/") and k.count("/") == 1 and k not in ("reward/mean", "reward/std"))
    parts = sorted(k for k in keys if k.startswith("reward/") and k.count("/") == 2)
    evals = sorted(k for k in keys if k.startswith("eval/") and k != "eval/unparsed")
    plan = [
        Chart("Reward: mean and every term", ("reward/mean", *terms)),
        Chart("Reward parts", tuple(parts)),
        Chart("KL to the reference", ("actor/kl",)),
        Chart("Policy loss", ("actor/pg_loss",)),
        Chart("Gradient norm", ("actor/grad_norm",)),
        Chart("Clip fraction", ("actor/clipfrac",)),
        Chart("Response length (tokens)", ("response_length/mean", "response_length/max")),
        Chart("Share cut at max tokens", ("response_length/clip_frac",)),
        Chart("Stage times (s, stacked)", STAGES, stacked=True),
        Chart("Throughput (tokens/s)", ("throughput/tokens_per_s", "throughput/rollout_tokens_per_s")),
        Chart("Held-out evaluation (%)", tuple(evals)),
        Chart("Held-out answers without a letter (share)", ("eval/unparsed",)),
    ]
    return [Chart(c.title, tuple(k for k in c.keys if k in keys), c.stacked) for c in plan if any(k in keys for k in c.keys)]


def _series(metrics: list[dict], key: str) -> list[float]:
    values = [record.get(key) for record in metrics]
    return [math.nan if v is None else float(v) for v in values]


def draw(chart: Chart, metrics: list[dict], restarts: list[int]) -> str:
    """The chart as an <svg> element (no XML prolog, so it can sit inside HTML)."""
    steps = [record["step"] for record in metrics]
    figure = Figure(figsize=(4.6, 2.7), dpi=72)
    axes = figure.add_subplot()
    if chart.stacked:
        axes.stackplot(steps, *[[0.0 if math.isnan(v) else v for v in _series(metrics, k)] for k in chart.keys],
                       labels=[k.split("/", 1)[1] for k in chart.keys], alpha=0.85)
    else:
        for key in chart.keys:
            values = _series(metrics, key)
            # eval points exist only every eval_every steps: draw those points, joined
            shown = [(s, v) for s, v in zip(steps, values) if not math.isnan(v)]
            axes.plot([s for s, _ in shown], [v for _, v in shown], marker="o", markersize=3, linewidth=1.5,
                      label=key.split("/", 1)[1] if key.count("/") else key)
    for index, step in enumerate(restarts):
        axes.axvline(step, color="crimson", linestyle="--", linewidth=1, label="restart" if index == 0 else None)
    axes.set_title(chart.title, fontsize=10)
    axes.set_xlabel("step", fontsize=8)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=6, loc="best")
    figure.tight_layout()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "anomalyr1"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]
