"""memoryllm-repro: MemoryLLM (Wang et al., ICML 2024) on Hugging Face Llama backbones."""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from .backbones import DEFAULT_BACKBONE, load_backbone, load_tokenizer, tiny_llama
from .model import MemoryLLM, MemoryLLMConfig, expected_retention, memory_parameter_count, theoretical_accuracy

__version__ = "0.1.0"

AutoConfig.register("memoryllm", MemoryLLMConfig, exist_ok=True)
# `AutoModelForCausalLM.from_pretrained(<our folder>)` then returns a MemoryLLM (config.json names model_type
# "memoryllm" and architectures ["MemoryLLM"]).
AutoModelForCausalLM.register(MemoryLLMConfig, MemoryLLM, exist_ok=True)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (the model's own drop generator is seeded by its config or model.seed)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


__all__ = ["MemoryLLM", "MemoryLLMConfig", "load_backbone", "load_tokenizer", "tiny_llama", "set_seed",
           "expected_retention", "theoretical_accuracy", "memory_parameter_count", "DEFAULT_BACKBONE"]
