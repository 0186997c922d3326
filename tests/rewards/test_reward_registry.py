"""Loading rewards by name, file path and module path; wrapping user functions; bad specs."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from reward_samples import make_sample, think_answer

from anomalyr1.rewards import RewardResult, list_rewards, load_reward, register_reward
from anomalyr1.rewards import registry
from anomalyr1.rewards.roam import Roam

BUILTINS = {"roam", "accuracy", "format", "lr_iad", "bbox_iou", "bbox_format"}
SAMPLE = make_sample(answer="B")

USER_REWARDS = textwrap.dedent(
    """
    import math
    from anomalyr1.rewards import RewardResult

    def plain(completion, sample):
        return float(len(completion))

    def with_parts(completion, sample):
        return 0.5, {"half": 0.5, "bad": "x"}

    def as_result(completion, sample):
        return RewardResult(0.25, {"quarter": 0.25})

    def scaled(completion, sample, scale=1.0):
        return scale

    scaled.value_range = (0.0, 10.0)

    def flexible(completion, sample, **params):
        return float(len(params))

    def broken(completion, sample):
        raise RuntimeError("user bug")

    def nan(completion, sample):
        return math.nan

    def wrong_type(completion, sample):
        return "1.0"

    class Bonus:
        def __init__(self, bonus=0.0):
            self.bonus = bonus

        def __call__(self, completion, sample):
            return self.bonus

    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The user file, named relative to the working directory as a recipe would."""
    (tmp_path / "rewards_dir").mkdir()
    (tmp_path / "rewards_dir" / "my_rewards.py").write_text(USER_REWARDS)
    monkeypatch.chdir(tmp_path)
    return "rewards_dir/my_rewards.py"


def test_builtins_are_registered() -> None:
    assert BUILTINS <= set(list_rewards())
    for name in BUILTINS:
        reward = load_reward(name)
        assert reward.name == name
        low, high = reward.value_range
        assert low <= high


def test_params_override() -> None:
    roam = load_reward("roam", both_right=0.7)
    assert roam(think_answer("so B.", "B"), SAMPLE).score == 0.7


@pytest.mark.parametrize("spec", ["roam", "accuracy", "bbox_iou"])
def test_unknown_params_are_named(spec: str) -> None:
    with pytest.raises(ValueError, match=rf"'{spec}'.*unknown parameter.*'bogus'"):
        load_reward(spec, bogus=1)


@pytest.mark.parametrize(
    ("fn", "score", "parts"),
    [
        ("plain", 3.0, {}),
        ("with_parts", 0.5, {"half": 0.5, "bad": 0.0}),
        ("as_result", 0.25, {"quarter": 0.25}),
        ("nan", 0.0, {}),
        ("broken", 0.0, {"error": 1.0}),
        ("wrong_type", 0.0, {"error": 1.0}),
    ],
)
def test_load_user_function_by_file_path(user_file: str, fn: str, score: float, parts: dict) -> None:
    reward = load_reward(f"{user_file}:{fn}")
    assert reward.name == fn
    assert reward("abc", SAMPLE) == RewardResult(score, parts)


def test_user_function_params_and_range(user_file: str) -> None:
    reward = load_reward(f"{user_file}:scaled", scale=3.0)
    assert reward("", SAMPLE).score == 3.0
    assert reward.value_range == (0.0, 10.0)
    assert load_reward(f"{user_file}:plain").value_range == (float("-inf"), float("inf"))
    assert load_reward(f"{user_file}:flexible", a=1, b=2)("", SAMPLE).score == 2.0
    with pytest.raises(ValueError, match="unknown parameter.*'factor'"):
        load_reward(f"{user_file}:scaled", factor=3.0)


def test_user_class_by_file_path(user_file: str) -> None:
    assert load_reward(f"{user_file}:Bonus", bonus=0.3)("", SAMPLE).score == 0.3
    with pytest.raises(ValueError, match="unknown parameter.*'malus'"):
        load_reward(f"{user_file}:Bonus", malus=1)


def test_a_failing_user_function_warns_once(user_file: str, caplog: pytest.LogCaptureFixture) -> None:
    reward = load_reward(f"{user_file}:broken")
    reward.name = "broken_once"  # a name no other test has warned about
    with caplog.at_level(logging.WARNING, logger="anomalyr1.rewards.base"):
        for _ in range(3):
            assert reward("x", SAMPLE).parts == {"error": 1.0}
        assert reward.score_group(["x", "y"], SAMPLE) == [RewardResult(0.0, {"error": 1.0})] * 2
    warnings = [r for r in caplog.records if "broken_once" in r.getMessage()]
    assert len(warnings) == 1 and "user bug" in warnings[0].getMessage()


def test_load_by_module_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "team_rewards_mod.py").write_text("def longer(completion, sample):\n    return len(completion) > 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = load_reward("team_rewards_mod:longer")
    assert (reward("abcd", SAMPLE).score, reward("ab", SAMPLE).score) == (1.0, 0.0)
    roam = load_reward("anomalyr1.rewards.roam:Roam", both_right=0.9)
    assert isinstance(roam, Roam) and roam(think_answer("so B.", "B"), SAMPLE).score == 0.9


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown reward 'nope'"),
        ("", "non-empty"),
        (":fn", "must look like"),
        ("missing/file.py:fn", "'missing/file.py:fn'.*not found"),
        ("no_such_package_xyz.mod:fn", "'no_such_package_xyz.mod:fn'.*cannot import"),
        ("anomalyr1.rewards.roam:nope", "'anomalyr1.rewards.roam:nope'.*no attribute 'nope'"),
        ("anomalyr1.rewards.roam:", "must look like"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_reward(spec)


def test_bad_specs_in_user_files(user_file: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        load_reward(f"{user_file}:missing")
    with pytest.raises(ValueError, match="NOT_CALLABLE.*not a reward"):
        load_reward(f"{user_file}:NOT_CALLABLE")
    (tmp_path / "broken.py").write_text("def f(:\n")
    with pytest.raises(ValueError, match=r"'broken.py:f'.*SyntaxError"):
        load_reward("broken.py:f")


def test_register_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_reward("always_half")
    def always_half(completion: str, sample: dict) -> float:
        return 0.5

    assert "always_half" in list_rewards()
    reward = load_reward("always_half")
    assert (reward.name, reward("", SAMPLE).score) == ("always_half", 0.5)
    register_reward("always_half")(always_half)  # the same definition again (a re-import)
    with pytest.raises(ValueError, match="already registered"):
        register_reward("always_half")(lambda completion, sample: 1.0)
    with pytest.raises(ValueError, match="reward name"):
        register_reward("a:b")


def test_rewards_never_import_the_platform() -> None:
    code = (
        "import sys, anomalyr1.rewards; "
        "bad = [m for m in sys.modules if m.startswith('anomalyr1.platform')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
