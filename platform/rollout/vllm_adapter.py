"""The learners' adapters served by a vLLM engine as a LoRA request (`learner.lora.sync: adapter`).

Every update is a new adapter under a new id, loaded before the previous one is removed: vLLM
caches adapters by id, so reusing one could keep the old weights, and a generate between the two
steps still finds an adapter. The engine's generate passes `request` with every prompt; without it
vLLM would roll out on the bare base model, silently, which is what the gap metric
(rollout/log_prob_diff_*) and the mutation test in tests/platform/test_vllm_engine.py guard.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from anomalyr1.platform.adapter_sync import AdapterUpdate, write_peft_folder
from anomalyr1.platform.models import fingerprint


class ServedAdapter:
    def __init__(self, llm):
        self.llm = llm
        self.request = None
        """The vllm LoRARequest of the learners' latest adapters; None until the first update."""
        self._folders = tempfile.TemporaryDirectory(prefix="anomalyr1-adapters-")  # removed with the actor

    def replace(self, update: AdapterUpdate, checksum: bool = False) -> float | None:
        """Load `update` as the adapter every request gets. With `checksum`, returns
        models.fingerprint of the tensors written for vLLM, which loaded them without error: it
        checks their names against the model's LoRA layers and refuses an adapter it cannot apply."""
        from vllm.lora.request import LoRARequest

        new_id = self.request.lora_int_id + 1 if self.request else 1
        folder = Path(self._folders.name) / str(new_id)
        write_peft_folder(folder, update.tensors, update.config)
        request = LoRARequest(lora_name=f"policy-{new_id}", lora_int_id=new_id, lora_path=str(folder))
        if not self.llm.llm_engine.add_lora(request):
            raise RuntimeError(f"vLLM did not load the learners' adapters from {folder}")
        previous, self.request = self.request, request
        if previous is not None:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
            shutil.rmtree(previous.lora_path)
        return fingerprint(update.tensors.items()) if checksum else None
