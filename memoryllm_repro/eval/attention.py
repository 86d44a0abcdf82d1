"""Where a model's attention goes: the share of each layer's attention that lands on each block of memory slots
(the walkthrough's §3 picture). HF attention returns its weights only in the eager implementation, so the
backbone is switched to eager for one forward pass and always switched back."""
from __future__ import annotations

import contextlib

import numpy as np
import torch


@contextlib.contextmanager
def eager_attention(model):
    """`with eager_attention(model): ...` runs the backbone with eager attention (which returns the weights)."""
    cfg = model.base.config
    impl = cfg._attn_implementation
    cfg._attn_implementation = "eager"
    try:
        yield
    finally:
        cfg._attn_implementation = impl


@torch.no_grad()
def memory_attention_mass(model, input_ids: torch.Tensor) -> np.ndarray:
    """[L, N/K]: per layer, the mean (over heads and queries) attention mass on each block of K memory slots
    (oldest block first) when the model reads `input_ids` [1, T] with its memory."""
    captured = []
    hooks = [layer.self_attn.register_forward_hook(lambda m, a, o: captured.append(o[1].detach()))
             for layer in model.layers]
    try:
        with eager_attention(model):
            model(input_ids)
    finally:
        for h in hooks:
            h.remove()
    nb = 1 if model.config.add_bos_embedding else 0
    N, K = model.N, model.K
    return np.stack([a[0].float().mean(0)[:, nb:nb + N].sum(0).reshape(-1, K).sum(1).cpu().numpy() / a.shape[2]
                     for a in captured])
