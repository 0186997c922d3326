#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.py needs on the lent GPU machine beyond what its image holds,
# downloaded into .whl/ (git-ignored; name it in the device run's `carry`). The image has torch,
# transformers, peft, accelerate, pillow, cloudpickle, numpy, pyyaml; it lacks pydantic (the
# recipe) and verl (the GRPO math) with what verl imports on the learners' path. Ray stays out
# (its cp312 wheel is 79 MB, more than the 64 MiB that may travel): gpu_check.py stands in for it.
#
#   bash benchmarks/gpu_wheels.sh [python version, default 3.12] [folder, default .whl]
#
# Versions are the dev venv's, but orjson's: its 3.8.3 predates cp312 builds, so the current one.
set -euo pipefail
version="${1:-3.12}"
folder="${2:-.whl}"
mkdir -p "$folder"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$folder" \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    verl==0.9.1 tensordict==0.10.0 pyvers==0.1.0 orjson==3.13.0 codetiming==1.4.0 omegaconf==2.3.1
# omegaconf pins antlr4-python3-runtime 4.9.*, published as source only: a pure-Python wheel built here
python3 -m pip wheel --quiet --no-deps -w "$folder" antlr4-python3-runtime==4.9.3
du -ch "$folder"/*.whl | tail -n 1
