"""The report page: one HTML file with inline CSS, SVG charts, data-URI thumbnails and a few
lines of script for the gallery filters. Its Content-Security-Policy forbids every network
request, so a browser opening it offline shows all of it and fetches nothing."""

from __future__ import annotations

import json
from collections import defaultdict
from html import escape

from anomalyr1.data_pipelines.scoring import COLUMNS
from anomalyr1.platform.report.charts import chart_plan, draw
from anomalyr1.platform.report.gallery import Card, Thumbnails, answer_card, rollout_card
from anomalyr1.platform.report.run import RunData

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.charts{display:flex;flex-wrap:wrap;gap:8px}.chart{border:1px solid #eee}.chart svg{display:block;width:296px;height:auto}
table.mmad{border-collapse:collapse;font-size:12px}table.mmad td,table.mmad th{border:1px solid #ddd;padding:3px 6px;text-align:right}
.up{color:#080}.down{color:#b00}pre{white-space:pre-wrap;word-break:break-word;margin:2px 0}
pre.recipe{background:#f6f6f6;padding:8px;font-size:12px;max-height:360px;overflow:auto}
#filters{position:sticky;top:0;background:#fff;padding:6px 0;z-index:1}#filters label{margin-right:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;display:flex;gap:8px;font-size:12px}
.card.right{border-left:5px solid #2a2}.card.wrong{border-left:5px solid #c33}.card.none{border-left:5px solid #999}
.card img{width:120px;height:auto;align-self:flex-start;border:1px solid #ccc}.noimg{width:120px;color:#999}
.card .body{min-width:0;flex:1}.meta{color:#666}.q{font-weight:600}ul.opts{margin:2px 0;padding-left:4px;list-style:none}
li.truth{color:#080;font-weight:600}li.chosen{text-decoration:underline}pre.think{color:#555;max-height:140px;overflow:auto}
pre.completion{max-height:140px;overflow:auto;background:#fafafa}.parts{color:#444}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px;margin-bottom:14px}.pair h3{font-size:13px;margin:4px 0}
.legend span{margin-right:12px}.box-pred{color:rgb(255,0,220)}.box-truth{color:rgb(0,190,255)}.box-seg{color:rgb(255,210,0)}
"""

SCRIPT = """
const thumbs = JSON.parse(document.getElementById('thumbs').textContent);
document.querySelectorAll('img[data-thumb]').forEach(img => { img.src = thumbs[img.dataset.thumb]; });
const selects = document.querySelectorAll('#filters select');
function applyFilters() {
  let shown = 0;
  document.querySelectorAll('#gallery .card').forEach(card => {
    const ok = [...selects].every(s => s.value === '' || card.dataset[s.name] === s.value);
    card.hidden = !ok;
    if (ok) shown += 1;
  });
  document.getElementById('shown').textContent = shown;
}
selects.forEach(s => s.addEventListener('change', applyFilters));
applyFilters();
"""


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def mmad_table(run: RunData) -> str:
    """The latest MMAD table; each cell with its change since the first evaluation, when there were two or more."""
    if not run.evaluations:
        return ""
    first, latest = run.evaluations[0], run.evaluations[-1]
    moved = len(run.evaluations) > 1
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    rows = []
    for row, cells in latest.table["table"].items():
        tds = []
        for column in COLUMNS:
            value, before = cells.get(column), first.table["table"].get(row, {}).get(column)
            delta = ""
            if moved and value is not None and before is not None:
                change = value - before
                delta = f' <span class="{"up" if change > 0 else "down" if change < 0 else ""}">({change:+.2f})</span>'
            tds.append(f"<td>{_fmt(value)}{delta}</td>")
        rows.append(f"<tr><th>{escape(row)}</th>{''.join(tds)}</tr>")
    when = "" if latest.step is None else f" at step {latest.step}"
    since = f"; in brackets, the change since step {first.step}" if moved else ""
    return (f"<h2>MMAD table{when}</h2><p>{latest.table.get('scored', 0)} answers scored, "
            f"{latest.table.get('left_out', 0)} left out (no letter A-E){since}.</p>"
            f'<table class="mmad"><tr><th></th>{head}</tr>{"".join(rows)}</table>')


def charts(run: RunData) -> str:
    if not run.metrics:
        return ""
    keys = {k for record in run.metrics for k, v in record.items() if v is not None and k != "step"}
    restarts = run.restart_steps
    note = f"<p>Restarts (dashed red): steps {', '.join(map(str, restarts))}.</p>" if restarts else ""
    svgs = "".join(f'<div class="chart">{draw(chart, run.metrics, restarts)}</div>' for chart in chart_plan(keys))
    return f'<h2>Curves</h2>{note}<div class="charts">{svgs}</div>'


def card_html(card: Card, thumbs: Thumbnails) -> str:
    key = thumbs.key(card)
    image = f'<img data-thumb="{key}" alt="{escape(card.sample_id)}">' if key else '<div class="noimg">no image</div>'
    options = "".join(
        f'<li class="{"truth" if letter == card.truth else ""} {"chosen" if letter == card.chosen else ""}">'
        f"{escape(letter)}. {escape(text)}</li>"
        for letter, text in card.options.items()
    )
    think, answer = card.think, card.answer
    if think is None and answer is None:
        written = f'<pre class="completion">{escape(card.text) or "(empty)"}</pre>'
    else:
        written = (f'<div>think:</div><pre class="think">{escape(think or "-")}</pre>'
                   f'<div>answer: <b>{escape((answer or "-").strip())}</b></div>')
    figures, details = [], ""
    if card.reward is not None:
        terms = ", ".join(f"{escape(k)} {v:.2f}" for k, v in sorted(card.reward_parts.items()) if "/" not in k)
        parts = ", ".join(f"{escape(k)} {v:.2f}" for k, v in sorted(card.reward_parts.items()) if "/" in k)
        figures.append(f"reward <b>{card.reward:.3f}</b> ({terms})")
        details = f"<details><summary>reward parts</summary>{parts}</details>" if parts else ""
    if card.advantage is not None:
        figures.append(f"advantage {card.advantage:+.3f}")
    if card.length is not None:
        figures.append(f"{card.length} tokens{' (cut at max)' if card.cut else ''}")
    step = "" if card.step is None else f"step {card.step} · "
    chosen = card.chosen or "no letter"
    return (
        f'<div class="card {card.verdict}" data-step="{"" if card.step is None else card.step}" data-verdict="{card.verdict}" '
        f'data-dataset="{escape(card.dataset)}" data-category="{escape(card.category)}">{image}<div class="body">'
        f'<div class="meta">{step}{escape(card.dataset)} / {escape(card.category)} · {escape(card.question_type)}</div>'
        f'<div class="q">{escape(card.question)}</div><ul class="opts">{options}</ul>'
        f"<div>truth <b>{escape(card.truth)}</b> · chose <b>{escape(chosen)}</b> ({card.verdict})</div>"
        f'{written}<div class="parts">{" · ".join(figures)}{details}</div></div></div>'
    )


def _select(name: str, label: str, values: list[str]) -> str:
    options = "".join(f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)
    return f'<label>{label} <select name="{name}"><option value="">all</option>{options}</select></label>'


def gallery(cards: list[Card], thumbs: Thumbnails, title: str) -> str:
    if not cards:
        return f"<h2>{title}</h2><p>Nothing logged (trainer.log_rollouts_every: 0?).</p>"
    steps = sorted({c.step for c in cards if c.step is not None})
    filters = [
        _select("step", "step", [str(s) for s in steps]) if steps else "",
        _select("verdict", "answer", ["right", "wrong", "none"]),
        _select("dataset", "dataset", sorted({c.dataset for c in cards})),
        _select("category", "category", sorted({c.category for c in cards})),
    ]
    segmented = ('<span class="box-seg">&#9632; SAM2 mask of the stated boxes</span>'
                 if any(c.segmented for c in cards) else "")
    legend = ('<div class="legend"><span class="box-pred">&#9632; boxes the text states</span>'
              f'<span class="box-truth">&#9632; ground truth (box or mask outline)</span>{segmented}</div>')
    return (f'<h2>{title}</h2>{legend}<div id="filters">{"".join(filters)} <span id="shown">{len(cards)}</span> of {len(cards)} shown</div>'
            f'<div id="gallery" class="cards">{"".join(card_html(c, thumbs) for c in cards)}</div>')


def first_and_last(cards: list[Card], thumbs: Thumbnails) -> str:
    """The prompts logged at both the first and the last logged step, their completions side by side."""
    steps = sorted({c.step for c in cards})
    if len(steps) < 2:
        return ""
    by_prompt: dict[tuple[int, str], list[Card]] = defaultdict(list)
    for card in cards:
        by_prompt[(card.step, card.sample_id)].append(card)
    first, last = steps[0], steps[-1]
    shared = sorted({s for step, s in by_prompt if step == first} & {s for step, s in by_prompt if step == last})
    title = f"<h2>Same prompts at step {first} and step {last}</h2>"
    if not shared:
        return title + "<p>No prompt was drawn at both steps (they come round again once training passes an epoch).</p>"
    rows = []
    for sample_id in shared:
        sides = []
        for step in (first, last):
            group = by_prompt[(step, sample_id)]
            mean = sum(c.reward or 0.0 for c in group) / len(group)
            right = sum(c.verdict == "right" for c in group)
            sides.append(f"<div><h3>step {step}: mean reward {mean:.3f}, {right} of {len(group)} right</h3>"
                         f'<div class="cards">{"".join(card_html(c, thumbs) for c in group)}</div></div>')
        rows.append(f'<div class="pair">{"".join(sides)}</div>')
    return title + "".join(rows)


def _run_summary(run: RunData) -> str:
    parts = [f"{len(run.metrics)} steps"]
    times = sorted(m["timing/step_s"] for m in run.metrics if m.get("timing/step_s") is not None)
    if times:
        parts.append(f"{sum(times):.1f} s of steps (median {times[len(times) // 2]:.2f} s)")
    logged = sorted({r["step"] for r in run.rollouts})
    if logged:
        parts.append(f"completions logged at steps {', '.join(map(str, logged))}")
    if run.evaluations:
        parts.append(f"evaluated at steps {', '.join(str(e.step) for e in run.evaluations)}")
    return "; ".join(parts)


def render(run: RunData) -> str:
    thumbs = Thumbnails()
    if run.kind == "train":
        cards = [rollout_card(r) for r in run.rollouts]
        title = f"Training run {run.folder.name}"
        summary = f"<p>{_run_summary(run)}; folder <code>{escape(str(run.folder))}</code>.</p>"
        recipe = f'<h2>Recipe as run</h2><pre class="recipe">{escape(run.recipe_text)}</pre>' if run.recipe_text else ""
        body = (summary + charts(run) + mmad_table(run) + gallery(cards, thumbs, "Logged completions")
                + first_and_last(cards, thumbs) + recipe)
    else:
        cards = [answer_card(r, run.masks) for r in run.answers]
        title = f"Evaluation {run.folder.name}"
        summary = f"<p>{len(cards)} answers; folder <code>{escape(str(run.folder))}</code>.</p>"
        body = summary + mmad_table(run) + gallery(cards, thumbs, "Answers")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}"
        f'<script type="application/json" id="thumbs">{json.dumps(thumbs.uris)}</script><script>{SCRIPT}</script></body></html>'
    )
