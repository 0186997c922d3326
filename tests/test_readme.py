"""The README stays true: its commands are the CI's, its recipe reference is the schema's."""

from pathlib import Path

from anomalyr1.platform.recipe import recipe_keys

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    command = next(line for line in (REPO / ".ci" / "run").read_text().splitlines() if "pytest" in line)
    assert command in README


def test_every_recipe_key_is_documented():
    missing = [key for key, _, _ in recipe_keys() if f"`{key}`" not in README]
    assert not missing, f"README lacks recipe keys {missing}: paste the output of `anomalyr1 keys`"
