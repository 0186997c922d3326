"""The report of a short real run, opened in headless Chromium: no console errors, no request
leaves the page, every image decodes, the charts are drawn and the gallery and its filters work.

Needs Debian's chromium and the Playwright library (the test extra); it skips without them
except in CI (CI=true), where .ci/run installs chromium and a missing browser is a failure.
Set ANOMALYR1_REPORT_SCREENSHOT=docs/report.png to refresh the README's screenshot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from anomalyr1.platform.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
STEPS = 6


def _browser_or_skip():
    in_ci = os.environ.get("CI") == "true"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            raise
        pytest.skip("the playwright library is not installed (pip install -e '.[test]')")
    if CHROMIUM is None:
        if in_ci:
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return sync_playwright


@pytest.fixture
def report(ray_session, tiny_model, synthetic_root, cache_dir, tmp_path, capsys) -> Path:
    """`anomalyr1 train` for 6 steps, then `anomalyr1 report`. At most 12 of the 28 questions are left
    for training once 16 are held out for evaluation, so 12 prompts a step draw every one of them
    each step, and step 1's logged prompts come round again at the last step."""
    output = tmp_path / "run"
    overrides = [
        f"model.path={tiny_model}", f"model.cache_dir={cache_dir}", f"data.root={synthetic_root}",
        f"trainer.output_dir={output}", "trainer.progress_bar=false", f"trainer.steps={STEPS}",
        "data.max_samples=28", "trainer.eval_every=3", "trainer.eval_samples=16", "trainer.log_rollout_groups=2",
        "trainer.prompts_per_step=12", "rollout.n=4", "rollout.workers=1", "reward.actors=1", "learner.workers=1",
    ]
    assert main(["train", *(arg for o in overrides for arg in ("--set", o))]) == 0
    assert f"anomalyr1 report {output}" in capsys.readouterr().out, "train ends by printing the report command"
    assert sorted(p.name for p in (output / "rollouts").iterdir()) == ["step_1.jsonl", f"step_{STEPS}.jsonl"]
    out = tmp_path / "report.html"
    assert main(["report", str(output), "--out", str(out)]) == 0
    return out


def test_report_opens_offline_in_chromium(report: Path, tmp_path: Path) -> None:
    sync_playwright = _browser_or_skip()
    page_url = report.resolve().as_uri()
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(  # a fresh profile folder
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        page = browser.new_page()
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed load: {r.url}"))
        page.on("request", lambda r: None if r.url in (page_url,) or r.url.startswith("data:") else problems.append(f"request: {r.url}"))
        page.goto(page_url)
        page.wait_for_load_state("load")
        page.wait_for_function("[...document.images].every(i => i.complete)")

        images = page.evaluate("[...document.images].map(i => [i.alt, i.naturalWidth])")
        assert images and all(width > 0 for _, width in images), f"undecoded images: {[a for a, w in images if not w]}"
        charts = page.evaluate("""[...document.querySelectorAll('.chart svg')].map(svg => {
            const box = svg.getBoundingClientRect();
            return [box.width, box.height, svg.querySelectorAll('path').length, svg.textContent.includes('step')]; })""")
        assert len(charts) >= 9, f"{len(charts)} charts"
        assert all(w > 100 and h > 50 and paths > 5 and axis for w, h, paths, axis in charts), charts
        cards = page.evaluate("[...document.querySelectorAll('#gallery .card')].map(c => c.dataset.step)")
        assert set(cards) == {"1", str(STEPS)} and len(cards) == 2 * 2 * 4, "2 groups of G=4 at the first and the last step"
        assert page.locator(".pair").count() == 2, "step 1's prompts, again at the last step, side by side"
        assert page.locator("table.mmad").count() == 1

        page.select_option("#filters select[name=step]", str(STEPS))
        visible = page.evaluate("[...document.querySelectorAll('#gallery .card')].filter(c => !c.hidden).map(c => c.dataset.step)")
        assert visible == [str(STEPS)] * 8 and page.inner_text("#shown") == "8"
        page.select_option("#filters select[name=step]", "")

        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": 2200})  # charts, table, gallery
        browser.close()
    assert not problems, problems
    with Image.open(shot) as image:
        assert image.size == (1280, 2200)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, "the screenshot shows more than a blank page"
        wanted = os.environ.get("ANOMALYR1_REPORT_SCREENSHOT")
        if wanted:
            image.convert("P", palette=Image.ADAPTIVE, colors=128).save(wanted, optimize=True)
