"""What the editors share, and what the evaluations that score them borrow: the edit a record asks for, the plain
backbone (LoRA off), and one right-padded batch. Kept here, not in the package `__init__` nor in `eval/`, so the
editors import nothing above them (eval may use editors, never the other way round)."""
from __future__ import annotations

import contextlib

import torch

from ..data.editing import edit_fields


def edit_text(record: dict) -> tuple[str, str]:
    """(prompt, new target) of a CounterFact or zsRE record."""
    prompt, _, new = edit_fields(record)
    return prompt, new


def base_only(model):
    """The backbone without its LoRA deltas (a no-op for an untrained wrapper)."""
    return model.adapters_disabled() if model.config.lora else contextlib.nullcontext()


def right_pad(seqs: list[list[int]], device) -> torch.Tensor:
    """Token lists as one batch, right-padded with each row's last token: a causal model never attends to the
    right padding (every real token precedes it), so each row computes as it would alone."""
    width = max(map(len, seqs))
    return torch.tensor([s + [s[-1]] * (width - len(s)) for s in seqs], device=device)
