"""FT and FT-L baselines: fine-tune MLP down-projections on "prompt -> new target" with Adam and early stopping
(ROME's FT recipe; the authors' EditingLlama used the last layer for FT, the last two for FT-L). FT-L keeps every
weight within an L-infinity ball of radius `norm_constraint` around the original (Zhu et al., 2020)."""
from __future__ import annotations

import contextlib

import torch

from .common import edit_text


@contextlib.contextmanager
def only_grad(model, params):
    """Gradient for `params` only (no .grad left on anything else); restores the requires_grad flags."""
    flags = {id(p): p.requires_grad for p in model.parameters()}
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    try:
        yield
    finally:
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
            if id(p) in keep:
                p.grad = None


def down_proj(model, layer: int):
    """The MLP down-projection of `layer` (LoRA-wrapped: its frozen base layer, the weight editors change)."""
    proj = model.layers[layer].mlp.down_proj
    return getattr(proj, "base_layer", proj)


class FT:
    def __init__(self, layers=(-1,), steps: int = 25, lr: float = 5e-4, norm_constraint: float | None = None,
                 stop_loss: float = 1e-2):
        self.layers, self.steps, self.lr, self.eps, self.stop = layers, steps, lr, norm_constraint, stop_loss
        self.scoring = {"use_memory": True}

    @contextlib.contextmanager
    def __call__(self, model, tok, record):
        prompt, new = edit_text(record)
        p = tok(prompt, add_special_tokens=False).input_ids
        t = tok(" " + new, add_special_tokens=False).input_ids
        ids = torch.tensor([p + t], device=model.device)
        labels = torch.tensor([[-100] * len(p) + t], device=model.device)
        weights = [down_proj(model, l % model.L).weight for l in self.layers]
        originals = [w.detach().clone() for w in weights]
        try:
            with only_grad(model, weights):
                self._fit(model, ids, labels, weights, originals)
            yield
        finally:
            with torch.no_grad():
                for w, o in zip(weights, originals):
                    w.copy_(o)

    def _fit(self, model, ids, labels, weights, originals):
        opt = torch.optim.Adam(weights, lr=self.lr)
        for _ in range(self.steps):
            loss = model(ids, labels=labels, use_memory=self.scoring["use_memory"]).loss
            if loss.item() < self.stop:     # early stop, as ROME's FT
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            if self.eps is not None:        # FT-L: project back into the L-inf ball around the original
                with torch.no_grad():
                    for w, o in zip(weights, originals):
                        w.copy_(o + (w - o).clamp(-self.eps, self.eps))


def FTL(layers=(-2, -1), steps: int = 25, lr: float = 5e-4, norm_constraint: float = 1e-4):
    return FT(layers=layers, steps=steps, lr=lr, norm_constraint=norm_constraint)
