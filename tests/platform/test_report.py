"""`anomalyr1 report` on a run folder and on an eval folder, built from real files of the formats
training and evaluation write (the browser test covers a real run end to end)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalyr1.data_pipelines.mmad import load_mmad
from anomalyr1.platform.cli import main
from anomalyr1.platform.eval_answers import answer_record, write_answers
from anomalyr1.platform.report.build import write_report
from anomalyr1.platform.report.gallery import PREDICTED, SEGMENTED, TRUTH

STAGES = {"timing/rollout_s": 0.3, "timing/reward_s": 0.05, "timing/learner_s": 0.6, "timing/sync_s": 0.04}


@pytest.fixture
def samples(synthetic_root: Path):
    loaded = load_mmad(synthetic_root).samples
    defective = next(s for s in loaded if s.bbox is not None and s.mask_path)
    normal = next(s for s in loaded if s.is_normal)
    return defective, normal


def _rollout(step: int, sample, index: int, completion: str, reward: float) -> dict:
    return {
        "step": step, "sample_id": sample.id, "group": 0, "completion_index": index, "dataset": sample.dataset,
        "category": sample.category, "defect_type": sample.defect_type, "question_type": sample.question_type,
        "image": sample.image, "reference_images": list(sample.reference_images), "question": sample.question,
        "options": sample.options, "truth": sample.answer, "bbox": list(sample.bbox) if sample.bbox else None,
        "mask_path": sample.mask_path, "image_size": [112, 112], "input_size": [56, 56], "completion": completion,
        "reward": reward, "reward_parts": {"accuracy": reward, "roam/consistent": 0.0}, "advantage": reward - 0.5,
        "length": 12, "cut": False,
    }


@pytest.fixture
def run_dir(tmp_path: Path, samples) -> Path:
    """Three steps; a rollout worker restarted at step 2; evaluations at steps 2 and 3;
    rollouts logged at steps 1 and 3 with one prompt at both."""
    defective, normal = samples
    run = tmp_path / "run"
    (run / "rollouts").mkdir(parents=True)
    metrics = [
        {"step": s, "reward/mean": 0.1 * s, "reward/accuracy": 0.1 * s, "reward/roam/consistent": 0.0, "actor/kl": 0.01 * s,
         "actor/pg_loss": -0.1, "actor/grad_norm": 0.5, "actor/clipfrac": 0.0, "response_length/mean": 20.0,
         "response_length/max": 32.0, "response_length/clip_frac": 0.25, "throughput/tokens_per_s": 100.0,
         "fault/rollout_restarts": float(s >= 2), **STAGES, **({"eval/average": 40.0 + s, "eval/unparsed": 0.5} if s >= 2 else {})}
        for s in (1, 2, 3)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run / "recipe.yaml").write_text("model:\n  path: builtin:tiny-qwen2.5-vl\ntrainer:\n  steps: 3\n")
    right = f"<think>a scratch</think><answer>{defective.answer}</answer>"
    boxed = '<think>there</think><answer>[{"bbox_2d": [10, 10, 30, 30]}]</answer>'
    steps = {1: [_rollout(1, defective, 0, boxed, 0.0), _rollout(1, normal, 0, "Z", 0.0)],
             3: [_rollout(3, defective, 0, right, 1.0), _rollout(3, defective, 1, "no idea", 0.0)]}
    for step, records in steps.items():
        (run / "rollouts" / f"step_{step}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    wrong = next(letter for letter in defective.options if letter != defective.answer)
    write_answers(run / "evals" / "step_2", [answer_record(defective, wrong), answer_record(normal, "Z")])
    write_answers(run / "evals" / "step_3", [answer_record(defective, defective.answer), answer_record(normal, "Z")])
    return run


def _thumbs(html: str) -> dict[str, Image.Image]:
    uris = json.loads(re.search(r'<script type="application/json" id="thumbs">(.*?)</script>', html).group(1))
    return {key: Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) for key, uri in uris.items()}


def _has_colour(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 60) -> bool:
    pixels = np.asarray(image.convert("RGB"), dtype=int)
    return bool((np.abs(pixels - np.array(colour)) <= tolerance).all(axis=-1).any())


def test_run_report_is_one_offline_page_with_charts_table_and_gallery(run_dir: Path, samples) -> None:
    out = write_report(run_dir)
    assert out == run_dir / "report.html"
    html = out.read_text()
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//)', html) and "url(http" not in html, "nothing loads from a network"
    charts = re.findall(r'<div class="chart"><svg.*?</svg>', html, flags=re.S)
    assert len(charts) == 12, "reward, parts, KL, loss, grad norm, clip, length, cut share, stages, throughput, eval, unparsed"
    stages = next(c for c in charts if "Stage times" in c)
    assert all(name in stages for name in ("rollout_s", "reward_s", "learner_s", "sync_s"))
    assert all("restart" in c for c in charts), "the restart at step 2 is marked on every chart"
    assert "steps 2." in html
    assert "MMAD table at step 3" in html and "the change since step 2" in html and "100.00 <span class=\"up\">(+100.00)</span>" in html
    assert "builtin:tiny-qwen2.5-vl" in html, "the recipe as run"

    gallery = html.split('id="gallery"', 1)[1].split("Same prompts", 1)[0]
    assert gallery.count('class="card ') == 4
    assert {"right", "wrong", "none"} >= set(re.findall(r'data-verdict="(\w+)"', gallery)) and 'data-verdict="right"' in gallery
    assert '<option value="1">1</option><option value="3">3</option>' in html, "step filter"
    for name in ("verdict", "dataset", "category"):
        assert f'<select name="{name}">' in html
    defective, _ = samples
    pair = html.split("Same prompts at step 1 and step 3", 1)[1]
    assert pair.count('class="pair"') == 1 and "step 1: mean reward 0.000" in pair and "step 3: mean reward 0.500, 1 of 2 right" in pair

    thumbs = _thumbs(html)
    keys = set(re.findall(r'data-thumb="(t\d+)"', html))
    assert keys == set(thumbs) and all(max(t.size) == 160 for t in thumbs.values())
    assert sum(_has_colour(t, PREDICTED) for t in thumbs.values()) == 1, "only the boxed completion's thumbnail has a box"
    of_sample = dict(re.findall(r'data-thumb="(t\d+)" alt="([^"]+)"', html))
    assert {of_sample[k] == defective.id for k, t in thumbs.items() if _has_colour(t, TRUTH)} == {True}, "truth drawn on the defective image only"
    assert any(_has_colour(t, TRUTH) for t in thumbs.values())


def test_boxes_are_drawn_where_the_text_puts_them(run_dir: Path) -> None:
    """[10, 10, 30, 30] in a 56-pixel model input is [20, 20, 60, 60] of the 112-pixel image, so
    [29, 29, 86, 86] of the 160-pixel thumbnail."""
    thumbs = _thumbs(write_report(run_dir).read_text())
    boxed = next(t for t in thumbs.values() if _has_colour(t, PREDICTED)).convert("RGB")
    for corner in ((29, 29), (86, 86), (29, 86)):
        assert _has_colour(boxed.crop((corner[0] - 2, corner[1] - 2, corner[0] + 3, corner[1] + 3)), PREDICTED)
    assert not _has_colour(boxed.crop((50, 50, 60, 60)), PREDICTED), "an outline, not a filled box"


def test_eval_folder_report_has_the_table_and_every_answer(tmp_path: Path, samples) -> None:
    defective, normal = samples
    records = [answer_record(defective, f"<answer>{defective.answer}</answer>"), answer_record(normal, "I cannot tell")]
    write_answers(tmp_path / "eval", records)
    out = tmp_path / "elsewhere" / "eval.html"
    assert main(["report", str(tmp_path / "eval"), "--out", str(out)]) == 0
    html = out.read_text()
    assert "MMAD table</h2>" in html and "1 answers scored, 1 left out" in html
    assert html.count('class="card ') == 2 and "I cannot tell" in html
    assert len(_thumbs(html)) == 2


def _masks_folder(folder: Path, image_key: str, size: tuple[int, int], square: tuple[int, int, int, int]) -> Path:
    """What `anomalyr1 masks` writes: masks/<key>.png (0 or 255) and masks.json."""
    mask = np.zeros(size[::-1], dtype=np.uint8)
    x1, y1, x2, y2 = square
    mask[y1:y2, x1:x2] = 255
    png = Path("masks", image_key).with_suffix(".png")
    (folder / png).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(folder / png)
    entry = {"image": image_key, "mask": png.as_posix(), "width": size[0], "height": size[1], "boxes": [list(square)]}
    (folder / "masks.json").write_text(json.dumps({"answers": "answers.json", "root": ".", "sam2": "builtin:tiny-sam2", "masks": [entry]}))
    return folder


def test_eval_report_fills_the_sam2_masks(tmp_path: Path, samples) -> None:
    """The mask's square (image pixels 0-56 of 112) is filled in the thumbnail (0-80 of 160),
    outside it is not; the legend names it only when there are masks; the eval folder's own
    masks.json is found without --masks."""
    defective, normal = samples
    records = [answer_record(defective, "<answer>[0, 0, 56, 56]</answer>"), answer_record(normal, "<answer>A</answer>")]
    write_answers(tmp_path / "eval", records)
    plain = write_report(tmp_path / "eval", tmp_path / "plain.html").read_text()
    assert "SAM2 mask" not in plain and not any(_has_colour(t, SEGMENTED, 40) for t in _thumbs(plain).values())

    size = Image.open(defective.image).size
    masks = _masks_folder(tmp_path / "masks", records[0]["image"], size, (0, 0, size[0] // 2, size[1] // 2))
    assert main(["report", str(tmp_path / "eval"), "--masks", str(masks), "--out", str(tmp_path / "masked.html")]) == 0
    html = (tmp_path / "masked.html").read_text()
    assert "SAM2 mask of the stated boxes" in html
    thumbs = _thumbs(html)
    of_sample = dict(re.findall(r'data-thumb="(t\d+)" alt="([^"]+)"', html))
    filled = [key for key, t in thumbs.items() if _has_colour(t.crop((20, 20, 60, 60)), SEGMENTED, 90)]
    assert [of_sample[k] for k in filled] == [records[0]["image"]], "the answered defective image only, inside the mask"
    assert not _has_colour(thumbs[filled[0]].crop((100, 100, 150, 150)), SEGMENTED, 90), "nothing outside the mask"

    _masks_folder(tmp_path / "eval", records[0]["image"], size, (0, 0, size[0] // 2, size[1] // 2))
    assert "SAM2 mask of the stated boxes" in write_report(tmp_path / "eval").read_text()


def test_a_broken_masks_index_is_one_line(tmp_path: Path, samples, capsys) -> None:
    defective, _ = samples
    write_answers(tmp_path / "eval", [answer_record(defective, "<answer>A</answer>")])
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "masks.json").write_text('{"no": "masks"}')
    assert main(["report", str(tmp_path / "eval"), "--masks", str(tmp_path / "masks")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "masks.json: not a masks index" in err


def test_a_folder_that_is_no_run_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "holds neither metrics.jsonl" in error
    (tmp_path / "answers.json").write_text('{"not": "a list"}')
    assert main(["report", str(tmp_path)]) == 2
    assert "expected a JSON list of answer records" in capsys.readouterr().err
