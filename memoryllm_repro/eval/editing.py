"""Editing metrics as ROME / EditingLlama define them (Table 1), for any method that edits a model.

CounterFact: efficacy = P(new) > P(true) on the edit prompt; generalization = the same on paraphrase prompts;
specificity = P(true) > P(new) on neighborhood prompts (other subjects with the same true object); each a
success rate x100, averaged per record then over records. zsRE: token-level accuracy (teacher forced argmax)
of the new answer on the question and its rephrase, and of the unrelated answer on the `loc` question.
Score = harmonic mean of the three.
"""
from __future__ import annotations

import torch
from scipy.stats import hmean


@torch.no_grad()
def target_logprob(model, tok, prompt: str, target: str, use_memory: bool = True) -> float:
    """log P(target | prompt), summed over the target's tokens (target gets a leading space)."""
    p = tok(prompt, add_special_tokens=False).input_ids
    t = tok(" " + target.strip(), add_special_tokens=False).input_ids
    ids = torch.tensor([p + t], device=model.device)
    logp = model(ids, use_memory=use_memory).logits[0, len(p) - 1:-1].float().log_softmax(-1)
    return logp.gather(-1, torch.tensor(t, device=model.device)[:, None]).sum().item()


@torch.no_grad()
def token_accuracy(model, tok, prompt: str, target: str, use_memory: bool = True) -> float:
    p = tok(prompt, add_special_tokens=False).input_ids
    t = tok(" " + target.strip(), add_special_tokens=False).input_ids
    ids = torch.tensor([p + t], device=model.device)
    pred = model(ids, use_memory=use_memory).logits[0, len(p) - 1:-1].argmax(-1).tolist()
    return sum(a == b for a, b in zip(pred, t)) / len(t)


def counterfact_scores(model, tok, record: dict, use_memory: bool = True, prefix: str = "") -> dict:
    """Success rates of one CounterFact record under the model's current state (edited or not). `prefix` is
    prepended to every prompt (in-context editing)."""
    rw = record["requested_rewrite"]
    new, true = rw["target_new"]["str"], rw["target_true"]["str"]

    def prefers_new(prompt):
        return target_logprob(model, tok, prefix + prompt, new, use_memory) > target_logprob(
            model, tok, prefix + prompt, true, use_memory)

    out = {"efficacy": float(prefers_new(rw["prompt"].format(rw["subject"])))}
    para = record.get("paraphrase_prompts") or []
    out["generalization"] = sum(prefers_new(p) for p in para) / len(para) if para else float("nan")
    nb = record.get("neighborhood_prompts") or []
    out["specificity"] = sum(not prefers_new(p) for p in nb) / len(nb) if nb else float("nan")
    return out


def zsre_scores(model, tok, record: dict, use_memory: bool = True, prefix: str = "") -> dict:
    return {"efficacy": token_accuracy(model, tok, prefix + record["src"], record["alt"], use_memory),
            "generalization": token_accuracy(model, tok, prefix + record["rephrase"], record["alt"], use_memory),
            "specificity": token_accuracy(model, tok, prefix + record["loc"], record["loc_ans"], use_memory)}


def table_row(per_record: list[dict]) -> dict:
    """Means x100 over records (NaN entries skipped) and Score = harmonic mean of the three."""
    row = {}
    for k in ("efficacy", "generalization", "specificity"):
        vals = [r[k] for r in per_record if r[k] == r[k]]
        row[k] = 100 * sum(vals) / len(vals) if vals else float("nan")
    parts = [row[k] for k in ("efficacy", "generalization", "specificity")]
    row["score"] = float(hmean(parts)) if all(p > 0 for p in parts) else 0.0
    row["n"] = len(per_record)
    return row
