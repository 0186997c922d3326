"""The environment of every actor the platform starts, locally or as a cluster job.

Its own module so that `anomalyr1 submit`, which checks a recipe's variables against it on the
submitting laptop, imports neither the driver nor torch.
"""

ACTOR_ENV = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "1"}
"""Actors share cores; thread pools per actor would oversubscribe them."""

QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "VLLM_LOGGING_LEVEL": "ERROR"}
"""Added unless the console is verbose (-v): every actor's transformers bars ("Loading weights",
"Writing model shards", through huggingface_hub's switch) and vLLM's warnings would otherwise
interleave with the run's own progress bar."""
