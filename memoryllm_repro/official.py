"""Load checkpoints in the authors' format (e.g. `YuWangX/memoryllm-7b`) and convert them.

Their `config.json` is a Llama config plus `num_blocks`, `num_tokens`, `add_bos_embedding` (model_type
"memoryllm", architectures ["MemoryLLM"]); their weights are the HF Llama names plus `memory` [L, N, d],
`bos_embedding` [L, 1, d], `new_memory_positional_emb` [1, 1, d] and `initialized` (uint8). See
official-implementation.md §1.1 and §8. Their inference file shared one drop draw across layers; we keep our
per-layer default (what their training used) and record the choice in the converted config.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

OFFICIAL_KEYS = ("memory", "bos_embedding", "new_memory_positional_emb", "initialized")
MEMORY_FIELDS = ("num_blocks", "num_tokens", "add_bos_embedding", "model_type", "architectures", "auto_map",
                 "transformers_version", "torch_dtype", "dtype", "_name_or_path")


def is_official(config: dict) -> bool:
    return config.get("model_type") == "memoryllm" and "backbone_config" not in config and "num_blocks" in config


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF checkpoint folder: safetensors or .bin, single file or sharded with an index."""
    from safetensors.torch import load_file
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            files = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            break
    else:
        files = [f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()]
    if not files:
        raise FileNotFoundError(f"no model weights in {folder}")
    sd = {}
    for f in files:
        sd.update(load_file(str(folder / f)) if f.endswith(".safetensors")
                  else torch.load(folder / f, map_location="cpu", weights_only=True))
    return sd


def llama_config(config: dict):
    from transformers import LlamaConfig
    fields = {k: v for k, v in config.items() if k not in MEMORY_FIELDS}
    rope = fields.pop("rope_scaling", None)
    cfg = LlamaConfig(**fields)
    if rope:
        from .backbones import linear_rope
        if rope.get("type", rope.get("rope_type")) != "linear":
            raise ValueError(f"unsupported rope_scaling {rope}: the authors used linear")
        linear_rope(cfg, rope["factor"])
    return cfg


def load_official(folder: Path, dtype=torch.float32, attn_implementation: str = "sdpa"):
    """An official-format folder -> our MemoryLLM (weights, learned vectors and the shipped pool)."""
    from transformers import LlamaForCausalLM

    from .model import MemoryLLM, MemoryLLMConfig
    config = json.loads((folder / "config.json").read_text())
    lcfg = llama_config(config)
    lcfg._attn_implementation = attn_implementation
    sd = read_state_dict(folder)
    extra = {k: sd.pop(k) for k in OFFICIAL_KEYS if k in sd}
    missing = [k for k in ("memory", "new_memory_positional_emb") if k not in extra]
    if missing:
        raise ValueError(f"{folder} is not a MemoryLLM checkpoint: missing {missing}")
    with torch.device("meta"):
        base = LlamaForCausalLM(lcfg)
    if "lm_head.weight" not in sd and lcfg.tie_word_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    base.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False, assign=True)
    if any(p.is_meta for p in base.parameters()):
        raise ValueError(f"{folder}: weights missing for {[n for n, p in base.named_parameters() if p.is_meta][:5]}")
    base.model.rotary_emb = type(base.model.rotary_emb)(lcfg)     # buffers were created on meta
    if lcfg.tie_word_embeddings:
        base.tie_weights()
    base.eval()
    mcfg = MemoryLLMConfig(backbone=None, backbone_config=lcfg.to_dict(), num_blocks=config["num_blocks"],
                           num_tokens=config["num_tokens"], add_bos_embedding=config.get("add_bos_embedding", True),
                           rope_factor=(config.get("rope_scaling") or {}).get("factor"))
    model = MemoryLLM(mcfg, base)
    with torch.no_grad():
        if "bos_embedding" in extra:
            model.bos_embedding.copy_(extra["bos_embedding"])
        model.new_memory_positional_emb.copy_(extra["new_memory_positional_emb"].reshape(1, 1, -1))
        mem = extra["memory"].to(dtype)
        if tuple(mem.shape) != (model.L, model.N, model.d):
            raise ValueError(f"memory has shape {tuple(mem.shape)}, config says {(model.L, model.N, model.d)}")
        model._pool = mem[None].clone()
    model.initialized = bool(extra.get("initialized", torch.tensor(1)).item())
    return model.eval()
