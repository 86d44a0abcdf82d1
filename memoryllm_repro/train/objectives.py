"""The paper's three training objectives (§3.2), one function each. Each returns the loss and the deltas that
the trainer commits to the pool after the optimizer step ("the pool is written with that step's contexts",
the authors' training loop): the pool is never trained by gradient."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cache import random_subset


def target_loss(model, target, weights=None, **kw) -> torch.Tensor:
    """The language-modelling loss on `target` (mean over its predicted tokens, as HF's `labels=` loss), or with
    `weights` [1, T] a weighted mean: token t counts weights[t] (TrainConfig.answer_weight: answers count more
    than the question and template text around them, which the model can predict without the memory)."""
    if weights is None:
        return model(target, labels=target, **kw).loss
    logits = model(target, **kw).logits[:, :-1].float()
    ce = F.cross_entropy(logits.flatten(0, 1), target[:, 1:].flatten(), reduction="none")
    w = weights[:, 1:].flatten().to(ce.dtype)
    return (ce * w).sum() / w.sum()


def new_knowledge_incorporation(model, x1, x2, through_write: bool, generator, weights=None):
    """§3.2.1, Figure 2: write x1, predict x2. Two processes, chosen 50/50 by the caller:
    (a) `through_write=True`: gradient flows through the write; x2 reads only [bos; e_θ'] (the K new vectors);
    (b) the write is detached and x2 reads the full updated pool [random N-K old vectors; e_θ'].
    Process (b) is what teaches reading among N vectors: in a throw-away CPU experiment (not in this package),
    300 steps of (a) alone recalled 0.00 of 20 held-out facts from a full pool, 400 steps of the 50/50 mix 0.62."""
    delta = model.inject_memory(x1, update_memory=False)
    if through_write:
        rows = delta
    else:
        delta = delta.detach()
        rows = torch.cat([model.sample_memory_rows(model.N - model.K, generator), delta], 2)
    loss = target_loss(model, x2, weights, memory_rows=rows)
    return loss, [delta.detach()]


def continuous_contexts_understanding(model, contexts, target, generator, grad_first_write: bool = False,
                                      weights=None):
    """§3.2.2, Figure 3: write x_1..x_{n-1} without gradient (each write sees the previous one's K vectors as its
    prefix, exactly as sequential commits would), then predict x_n from the pool as it would be after those
    writes: [random subset of old vectors; the new vectors, thinned by the drops they would have suffered].

    `grad_first_write` (our addition, TrainConfig.grad_first_write): the gradient also flows through the write of
    x_1, read after the later writes' drops and beside their vectors. The paper's objective trains only the read
    at a distance; the write is trained only by §3.2.1's process (a), which reads all K new vectors right away,
    so nothing asks a write to survive losing some of them. The `cause` probe (eval.probes) on a snapshot of the
    generalist run: dropping the share of a fact's vectors that 10 later writes drop (18 of 64 per layer, positions
    kept) alone took natural-fact recall from 0.65 to 0.30, the same as 10 real writes."""
    deltas, acc, prev = [], None, None
    for i, c in enumerate(contexts):
        with torch.set_grad_enabled(grad_first_write and i == 0 and torch.is_grad_enabled()):
            d = model.inject_memory(c, update_memory=False, memory_rows=prev)
        deltas.append(d.detach())
        if acc is not None:   # each later write drops K of N vectors: thin the earlier deltas alike
            keep = acc.shape[2] - acc.shape[2] // model.config.num_blocks
            idx = random_subset(1, model.L, acc.shape[2], keep, generator).to(acc.device)
            acc = acc.gather(2, idx[..., None].expand(-1, -1, -1, model.d))
        acc = d if acc is None else torch.cat([acc, d.detach()], 2)
        prev = d.detach()
    rows = torch.cat([model.sample_memory_rows(model.N - acc.shape[2], generator), acc], 2)
    loss = target_loss(model, target, weights, memory_rows=rows)
    return loss, deltas


def mitigating_forgetting(model, cached_target, weights=None):
    """§3.2.3, Algorithm 1 (the efficient form the authors used): re-predict a target cached at an earlier step,
    whose contexts were committed then and have since been followed by other steps' writes. Reads the full
    current pool; writes nothing. `weights`: the cached target's answer weights, if it had them."""
    loss = target_loss(model, cached_target, weights)
    return loss, []


def base_distillation(model, ids, use_memory: bool) -> torch.Tensor:
    """Our addition (TrainConfig.kl_weight): KL(p_base || p_φ) per token on general text, the teacher being the
    backbone without LoRA and without memory. Training on memory-conditioned fact documents otherwise drifts φ's
    plain language modelling (+60% perplexity on held-out generic text after 1000 steps of the small preset)."""
    with torch.no_grad(), model.adapters_disabled():
        teacher = model(ids, use_memory=False).logits.float().log_softmax(-1)
    student = model(ids, use_memory=use_memory).logits.float().log_softmax(-1)
    return F.kl_div(student.flatten(0, 1), teacher.flatten(0, 1), log_target=True, reduction="batchmean")
