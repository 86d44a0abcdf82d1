"""Language-model checks: does reading memory lower the loss on text that depends on what was written, and does
training leave general ability intact (perplexity on held-out generic text, the question of official issue #12)?"""
from __future__ import annotations

import argparse
import json
import math
import random

import torch

from ..checkpoints import MODEL_SPEC_HELP, load_model
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
def document_losses(model, tok, texts=None, use_memory: bool = True, max_tokens: int = 512) -> list[tuple[float, int]]:
    """(summed next-token loss, predicted tokens) for each held-out generic document (first `max_tokens` tokens);
    documents under 2 tokens are skipped."""
    texts = texts if texts is not None else generic_texts()[-GENERIC_HOLDOUT:]
    out = []
    for text in texts:
        ids = torch.tensor([tok(text, add_special_tokens=False).input_ids[:max_tokens]], device=model.device)
        if ids.shape[1] >= 2:
            out.append((model(ids, labels=ids, use_memory=use_memory).loss.item() * (ids.shape[1] - 1),
                        ids.shape[1] - 1))
    return out


def perplexity(model, tok, texts=None, use_memory: bool = True, max_tokens: int = 512) -> float:
    """Token-weighted perplexity of held-out generic documents (first `max_tokens` tokens each)."""
    return pooled_perplexity(document_losses(model, tok, texts, use_memory, max_tokens))


def pooled_perplexity(docs: list[tuple[float, int]]) -> float:
    """exp(total loss / total tokens) of document_losses' output."""
    return math.exp(sum(x for x, _ in docs) / sum(n for _, n in docs))


def paired_ratio(base: list[tuple[float, int]], other: list[tuple[float, int]], resamples: int = 2000,
                 seed: int = 0) -> dict:
    """Perplexity of `other` over `base` on the same documents, with a 95% paired-bootstrap interval: are two
    checkpoints told apart by this set, or is the difference the choice of documents? (The run's 10 validation
    documents and the card's 40 once ordered the same two checkpoints opposite ways.)"""
    if len(base) != len(other) or [n for _, n in base] != [n for _, n in other]:
        raise ValueError("paired_ratio needs the same documents, with the same token counts, on both sides")
    if not base or resamples < 1:
        raise ValueError("paired_ratio needs at least one document and one resample")

    def ratio(idx):
        return math.exp((sum(other[i][0] for i in idx) - sum(base[i][0] for i in idx)) / sum(base[i][1] for i in idx))

    rng, n = random.Random(seed), len(base)
    boots = sorted(ratio([rng.randrange(n) for _ in range(n)]) for _ in range(resamples))
    return {"ratio": ratio(range(n)), "low": boots[int(0.025 * resamples)],
            "high": boots[min(resamples - 1, int(0.975 * resamples))], "documents": n, "resamples": resamples}


def compare_perplexity(base_spec: str, other_spec: str, threads: int = 0) -> dict:
    """The card's perplexity of two models on the same held-out documents, with an empty and with a warm memory,
    and the paired ratio other / base for each."""
    if threads:
        torch.set_num_threads(threads)
    losses = []                                   # [base, other], each {"empty": per-document, "warm": ...}
    for spec in (base_spec, other_spec):
        model, tok, _ = load_model(spec)
        losses.append({mem: document_losses(model, tok, use_memory=mem == "warm") for mem in ("empty", "warm")})
    out = {}
    for mem in ("empty", "warm"):
        b, o = losses[0][mem], losses[1][mem]
        out[mem] = {"base": pooled_perplexity(b), "other": pooled_perplexity(o), **paired_ratio(b, o)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m memoryllm_repro.eval.lm",
        description="Compare two models' perplexity on the model card's held-out generic documents, per document: "
                    "the ratio other / base with a 95% paired-bootstrap interval, empty and warm memory.")
    ap.add_argument("--model", default="default", help="the base model: " + MODEL_SPEC_HELP)
    ap.add_argument("--against", required=True, help="the model compared with it (same forms)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's own choice)")
    a = ap.parse_args(argv)
    print(json.dumps(compare_perplexity(a.model, a.against, a.threads), indent=1))


if __name__ == "__main__":
    main()
