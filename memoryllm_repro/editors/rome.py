"""ROME (Meng et al., 2022): a rank-one edit of one MLP down-projection W (output = W k, k the MLP's hidden
activation) so that the subject's key k* maps to a value v* that makes the model say the new object:

    W' = W + (v* - W k*) (C^-1 k*)^T / ((C^-1 k*)^T k*),    C = E[k k^T] over a corpus.

k* is the mean key at the subject's last token over a few short prefixes; v* is found by gradient steps on an
offset added to the layer's output at that token (target NLL + KL on "<subject> is a" + weight decay, norm
clamped). C is estimated on the bundled generic text the first time a (backbone, layer) is used and cached under
`$MEMORYLLM_CACHE/rome_stats/` (not in git). Defaults follow the authors' EditingLlama Llama-2 settings
(v_num_grad_steps 20, v_lr 0.5, v_weight_decay 0.5, clamp_norm_factor 4, kl_factor 0.0625, and ROME's
early stop at a loss of 0.05); the layer is
scaled to depth (Llama-2 used layer 5 of 32; we use 5 of 30 for SmolLM2).
"""
from __future__ import annotations

import contextlib
import hashlib

import torch

from ..backbones import cache_root
from ..data.corpus import GENERIC_HOLDOUT, generic_texts
from .common import edit_text, right_pad
from .ft import down_proj, only_grad

PREFIXES = ["", "The following is true. ", "I read this today. ", "Here is a fact. ", "In short, ",
            "According to the article, "]


def _subject_index(tok, text: str, subject: str) -> int:
    end = text.index(subject) + len(subject)
    return len(tok(text[:end], add_special_tokens=False).input_ids) - 1


@torch.no_grad()
def key_covariance(model, tok, layer: int, num_docs: int = 200, max_tokens: int = 256) -> torch.Tensor:
    """C = E[k k^T] of the down-projection inputs of `layer` over held-in generic text, cached on disk."""
    W = down_proj(model, layer).weight
    tag = hashlib.sha256(f"{model.base.config.to_json_string()}-{W.float().sum().item():.6e}".encode()).hexdigest()
    path = cache_root() / "rome_stats" / f"{tag[:16]}-layer{layer}-{num_docs}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)   # a cache file: tensors only, never code
    texts = generic_texts()[:-GENERIC_HOLDOUT][:num_docs]
    d_ff = W.shape[1]
    acc, n = torch.zeros(d_ff, d_ff, dtype=torch.float64), 0

    def grab(mod, inp):
        nonlocal acc, n
        k = inp[0][0].double()
        acc += k.T @ k
        n += k.shape[0]
    h = down_proj(model, layer).register_forward_pre_hook(grab)
    try:
        for t in texts:
            ids = tok(t, add_special_tokens=False).input_ids[:max_tokens]
            model(torch.tensor([ids], device=model.device), use_memory=False)
    finally:
        h.remove()
    C = (acc / n).float()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(C, path)
    return C


class ROME:
    def __init__(self, layer: int = 5, steps: int = 20, lr: float = 0.5, weight_decay: float = 0.5,
                 clamp_norm_factor: float = 4.0, kl_factor: float = 0.0625, num_docs: int = 200,
                 stop_loss: float = 5e-2):
        self.layer, self.steps, self.lr, self.wd, self.stop_loss = layer, steps, lr, weight_decay, stop_loss
        self.clamp, self.kl, self.num_docs = clamp_norm_factor, kl_factor, num_docs
        self.scoring = {"use_memory": False}

    def _key_and_value(self, model, tok, prompt, subject, layer):
        """Mean key and value at the subject's last token over the prefixed prompts (one batched forward)."""
        ids, pos, _ = _batch(model, tok, [(pre + prompt, subject, []) for pre in PREFIXES])
        got = {}

        def grab(mod, inp, out):
            rows = torch.arange(len(pos), device=pos.device)
            got["k"], got["v"] = inp[0][rows, pos].detach(), out[rows, pos].detach()
        h = down_proj(model, layer).register_forward_hook(grab)
        try:
            with torch.no_grad():
                model(ids, use_memory=False, logits_to_keep=1)
        finally:
            h.remove()
        return got["k"].mean(0), got["v"].mean(0)

    @contextlib.contextmanager
    def __call__(self, model, tok, record):
        if "requested_rewrite" in record:
            subject = record["requested_rewrite"]["subject"]
        else:
            subject = record.get("subject") or record["src"]
        prompt, new = edit_text(record)
        layer = self.layer % model.L
        W = down_proj(model, layer).weight
        original = W.detach().clone()
        try:
            k_star, v_orig = self._key_and_value(model, tok, prompt, subject, layer)
            v_star = self._optimize_value(model, tok, prompt, subject, new, layer, v_orig)
            C = key_covariance(model, tok, layer, self.num_docs)
            ck = torch.linalg.solve(C + 1e-6 * torch.eye(C.shape[0]), k_star.float())
            with torch.no_grad():
                residual = v_star - original.float() @ k_star.float()
                W.add_((torch.outer(residual, ck) / (ck @ k_star.float())).to(W.dtype))
            yield
        finally:
            with torch.no_grad():
                W.copy_(original)

    def _optimize_value(self, model, tok, prompt, subject, new, layer, v_orig):
        """v* = v + δ with δ trained so that the edited prompts produce `new` (ROME's compute_v, condensed):
        the prefixed prompts with the target and the KL prompt "<subject> is a" go through one right-padded batch
        per step, δ added at each row's subject position; early stop once the loss is below `stop_loss`."""
        t_ids = tok(" " + new, add_special_tokens=False).input_ids
        rows = [(pre + prompt, subject, t_ids) for pre in PREFIXES] + [(f"{subject} is a", subject, [])]
        ids, pos, text_lens = _batch(model, tok, rows)
        starts = [n - 1 for n in text_lens]             # the position that predicts each row's first target token
        target = torch.tensor(t_ids, device=model.device)
        delta = torch.zeros_like(v_orig, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.lr)

        def add(mod, inp, out):
            out = out.clone()
            r = torch.arange(len(pos), device=pos.device)
            out[r, pos] = out[r, pos] + delta
            return out
        with torch.no_grad():
            base_kl = model(ids, use_memory=False).logits[-1, starts[-1]].log_softmax(-1)
        h = down_proj(model, layer).register_forward_hook(add)
        try:
            with only_grad(model, []):      # gradient for delta only
                for _ in range(self.steps):
                    logits = model(ids, use_memory=False).logits
                    nll = torch.stack([-logits[i, s:s + len(t_ids)].log_softmax(-1).gather(-1, target[:, None]).mean()
                                       for i, s in enumerate(starts[:-1])]).mean()
                    kl = torch.nn.functional.kl_div(logits[-1, starts[-1]].log_softmax(-1), base_kl,
                                                    log_target=True, reduction="sum")
                    loss = nll + self.kl * kl + self.wd * (delta.norm() / v_orig.norm()) ** 2
                    if loss.item() < self.stop_loss:
                        break
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        limit = self.clamp * v_orig.norm()
                        if delta.norm() > limit:
                            delta.mul_(limit / delta.norm())
        finally:
            h.remove()
        return (v_orig + delta).detach().float()


def _batch(model, tok, rows):
    """Right-padded ids of (text + target ids) per row, each row's subject position and each text's length."""
    texts = [tok(text, add_special_tokens=False).input_ids for text, _, _ in rows]
    ids = right_pad([x + list(t) for x, (_, _, t) in zip(texts, rows)], model.device)
    pos = torch.tensor([_subject_index(tok, text, subject) for text, subject, _ in rows], device=model.device)
    return ids, pos, [len(x) for x in texts]
