"""Language-model checks: does reading memory lower the loss on text that depends on what was written, and does
training leave general ability intact (perplexity on held-out generic text, the question of official issue #12)?"""
from __future__ import annotations

import math
import random

import torch

from ..data.corpus import GENERIC_HOLDOUT, chunk_document, generic_texts
from ..data.world import World, paragraph, qa_block


def heldout_fact_pairs(tok, n: int = 60, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """(x1, x2): a paragraph about a held-out entity and questions answered by it."""
    world, rng = World(0, "heldout"), random.Random(f"pairs-{seed}")
    out = []
    for _ in range(n):
        e = rng.choice(world.people) if rng.random() < 0.75 else rng.choice(world.towns)
        text, qas = paragraph(e, rng, prefix="Context: ")
        x2 = qa_block(rng.sample(qas, min(3, len(qas))), rng)
        out.append((tok(text, add_special_tokens=False).input_ids, tok(x2, add_special_tokens=False).input_ids))
    return out


def heldout_generic_pairs(tok, n: int = 40, seed: int = 0, min_len=64, max_len=128):
    """(x1, x2): consecutive chunks of the generic documents never used in training."""
    rng, out = random.Random(f"gpairs-{seed}"), []
    for text in generic_texts()[-GENERIC_HOLDOUT:]:
        chunks = chunk_document(tok(text, add_special_tokens=False).input_ids, min_len, max_len, rng)
        if len(chunks) >= 2:
            out.append((chunks[-2], chunks[-1]))
    return out[:n]


@torch.no_grad()
def memory_loss(model, pairs) -> dict:
    """Mean loss on x2 after writing x1 (pool restored per pair) and with memory switched off."""
    dev = model.device
    with_mem, without = [], []
    for x1, x2 in pairs:
        t2 = torch.tensor([x2], device=dev)
        with model.memory_snapshot():
            model.inject_memory(torch.tensor([x1], device=dev))
            with_mem.append(model(t2, labels=t2).loss.item())
        without.append(model(t2, labels=t2, use_memory=False).loss.item())
    return {"loss_with_memory": sum(with_mem) / len(with_mem), "loss_without_memory": sum(without) / len(without),
            "n": len(pairs)}


@torch.no_grad()
def perplexity(model, tok, texts=None, use_memory: bool = True, max_tokens: int = 512) -> float:
    """Token-weighted perplexity of held-out generic documents (first `max_tokens` tokens each)."""
    texts = texts if texts is not None else generic_texts()[-GENERIC_HOLDOUT:]
    nll, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tok(text, add_special_tokens=False).input_ids[:max_tokens]], device=model.device)
        if ids.shape[1] < 2:
            continue
        loss = model(ids, labels=ids, use_memory=use_memory).loss.item()
        nll += loss * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return math.exp(nll / count)
