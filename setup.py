"""Only what pyproject.toml cannot say: install anomalyr1-cpu-torch-companions.pth into site-packages.

Python runs a .pth file's import line at every interpreter start; this one keeps PyPI's CUDA
builds of torchvision, torchaudio and torchcodec from breaking CPU torch (see
anomalyr1_cpu_torch_companions.py). A wheel's root lands
in site-packages; an editable install writes its non-package files to the `install` command's
install_lib, which is the root of the editable wheel.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "anomalyr1-cpu-torch-companions.pth"


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        Path(root).mkdir(parents=True, exist_ok=True)
        self.copy_file(PTH, str(Path(root) / PTH))


setup(cmdclass={"build_py": build_py_with_pth})
