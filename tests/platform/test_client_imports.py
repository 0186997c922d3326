"""Client commands stay light: checking or submitting a recipe on a laptop loads no torch."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

HEAVY = ("torch", "transformers", "verl", "ray", "anomalyr1.platform.driver")


def test_validate_and_submit_load_no_torch_transformers_verl_or_driver():
    code = f"""
import sys
from pathlib import Path
from anomalyr1.platform import cli
from anomalyr1.platform.recipe import load_recipe
from anomalyr1.platform.submit import job_spec
assert cli.main(["validate"]) == 0
recipe = load_recipe("{REPO}/recipes/anomalyr1.yaml", check_files=False)
job_spec("{REPO}/recipes/anomalyr1.yaml", [], recipe, Path("{REPO}"))
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", f"loaded: {result.stdout}"


def test_a_bad_estimator_name_still_fails_at_validation():
    result = subprocess.run([sys.executable, "-m", "anomalyr1.platform.cli", "validate", "--set", "algorithm.adv_estimator=grpoo"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "algorithm.adv_estimator = 'grpoo': unknown advantage estimator (expected one of" in result.stderr
    assert "grpo," in result.stderr
