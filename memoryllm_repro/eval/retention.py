"""Knowledge retention (paper §4.5, Figure 5; the authors' `test_qa_memory.py`).

Per example: write the relevant context at update 1, then one unrelated context per update; after every write,
greedily generate 10 tokens for the question; a hit is the answer appearing (case-sensitive substring, as the
authors' `calculate_exact_hit_accuracy`) in those tokens. The pool is restored between examples by default (the
authors' default carried it over: `carry_over=True`). Reference points: the "borderline" (the question asked of
the warm pool with its context never written) and the context placed in the prompt instead of in memory.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import qa_datasets as qa
from ..data.qa import QAExample, context_text, question_text
from ..data.retention_set import heldout_retention_set
from ..editors.common import base_only


def hit(prediction: str, answer: str) -> bool:
    """The authors' exact-hit rule: the stripped answer is a substring of the prediction."""
    answer = answer.replace("</s>", "").strip()
    return bool(answer) and answer in prediction


def _ids(tok, text, max_tokens=512):
    return tok(text, return_tensors="pt", add_special_tokens=False, truncation=True,
               max_length=max_tokens).input_ids


@torch.no_grad()
def answer(model, tok, prompt: str, max_new_tokens: int = 10, use_memory: bool = True) -> str:
    return answers(model, tok, [prompt], max_new_tokens, use_memory)[0]


@torch.no_grad()
def answers(model, tok, prompts: list[str], max_new_tokens: int = 10, use_memory: bool = True) -> list[str]:
    """Greedy answers to a batch of prompts (left-padded); prompt b reads memory b when the model holds
    len(prompts) independent memories (`expand_memories`)."""
    side, tok.padding_side = tok.padding_side, "left"
    try:
        enc = tok(prompts, return_tensors="pt", add_special_tokens=False, truncation=True, max_length=512,
                  padding=True)
    finally:
        tok.padding_side = side
    ids, mask = enc.input_ids.to(model.device), enc.attention_mask.to(model.device)
    out = model.generate(ids, attention_mask=mask if len(prompts) > 1 else None, max_new_tokens=max_new_tokens,
                         use_memory=use_memory, do_sample=False, pad_token_id=tok.pad_token_id)
    return [tok.decode(o[ids.shape[1]:], skip_special_tokens=True) for o in out]


@torch.no_grad()
def answer_nll(model, tok, prompts: list[str], golds: list[str], use_memory: bool = True) -> list[float]:
    """Teacher-forced negative log-likelihood of each gold answer after its prompt (nats per answer token),
    left-padded like `answers`, prompt b reading memory b. A continuous companion to `hit`: it moves before a
    greedy answer flips, so a few dozen facts show a trend that their hit rate (steps of 1/n) hides."""
    seqs = []
    for p, g in zip(prompts, golds):
        sep = "" if p[-1:].isspace() else " "          # "Answer:" + " Paris"; a chat prompt ends in a newline
        seqs.append((tok(p, add_special_tokens=False).input_ids,
                     tok(sep + g.strip(), add_special_tokens=False).input_ids))
    T = max(len(p) + len(a) for p, a in seqs)
    ids = torch.full((len(seqs), T), tok.pad_token_id if tok.pad_token_id is not None else 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, (p, a) in enumerate(seqs):
        ids[b, T - len(p) - len(a):] = torch.tensor(p + a)
        mask[b, T - len(p) - len(a):] = 1
    logp = model(ids.to(model.device), attention_mask=mask.to(model.device) if len(seqs) > 1 else None,
                 use_memory=use_memory).logits.float().log_softmax(-1)
    out = []
    for b, (_, a) in enumerate(seqs):       # answer token j sits at T - len(a) + j, predicted one position before
        pos = torch.arange(T - len(a) - 1, T - 1, device=logp.device)
        out.append(-logp[b, pos, torch.tensor(a, device=logp.device)].mean().item())
    return out


@torch.no_grad()
def run_retention(model, tok, examples: list[QAExample], distractors: list[str], num_updates: int,
                  carry_over: bool = False, max_new_tokens: int = 10, borderline: bool = True,
                  in_prompt: bool = False, progress: bool = True, batch_size: int = 1) -> list[dict]:
    """Tidy records: one row per (example, condition, step). Conditions: "memory" (the protocol), "borderline"
    (the question asked of the warm pool, context never written), "context_in_prompt" (the same model, memory off,
    context in the prompt: the upper reference) and "base_context_in_prompt" (the backbone without LoRA, context in
    the prompt). step = updates since the context was written (1 = right after it); 0 for references.
    `batch_size` > 1 runs that many examples at once, each in its own copy of the pool (`expand_memories`): the
    same protocol, other random drops, several times the throughput on CPU (bench/run.py --sections eval)."""
    if carry_over and batch_size > 1:
        raise ValueError("carry_over chains the examples through one pool; it needs batch_size=1")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    rows = []
    bar = tqdm(total=len(examples), desc="retention", disable=not progress)
    for i in range(0, len(examples), batch_size):
        group = examples[i:i + batch_size]
        snap = model.memory_snapshot() if not carry_over else contextlib.nullcontext()
        with snap:
            rows += _retention_group(model, tok, group, distractors, num_updates, max_new_tokens, borderline,
                                     in_prompt)
        bar.update(len(group))
    bar.close()
    return rows


def _retention_group(model, tok, group, distractors, num_updates, max_new_tokens, borderline, in_prompt):
    B, rows = len(group), []
    qs = [question_text(ex) for ex in group]

    def record(condition, step, preds):
        rows.extend(dict(id=ex.id, condition=condition, step=step, hit=hit(p, ex.answer), pred=p)
                    for ex, p in zip(group, preds))

    if B > 1:   # contexts differ in length: encode each against the (still shared) pool, commit them later
        deltas = [model.inject_memory(_ids(tok, context_text(ex)).to(model.device), update_memory=False)
                  for ex in group]
        model.expand_memories(B)
    if borderline:
        record("borderline", 0, answers(model, tok, qs, max_new_tokens))
    if in_prompt:
        prompts = [context_text(ex) + "\n" + q for ex, q in zip(group, qs)]
        record("context_in_prompt", 0, answers(model, tok, prompts, max_new_tokens, use_memory=False))
        with base_only(model):
            record("base_context_in_prompt", 0, answers(model, tok, prompts, max_new_tokens, use_memory=False))
    if B == 1:
        model.inject_memory(_ids(tok, context_text(group[0])).to(model.device))
    else:
        model.write_memory(torch.cat(deltas))
    for step in range(1, num_updates + 2):
        record("memory", step, answers(model, tok, qs, max_new_tokens))
        if step <= num_updates:   # the same unrelated context for every example of the group
            d = _ids(tok, distractors[(step - 1) % len(distractors)]).to(model.device)
            model.inject_memory(d.expand(B, -1))
    return rows


# ---------------------------------------------------------------------------------------------- Figure 5
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def retention_data(dataset: str, tok, num_examples: int, num_distractors: int, seed: int = 0,
                   data_dir: str | None = None):
    """(examples, unrelated contexts) of one dataset: "bundled" (our held-out set), "squad", "nq"."""
    if dataset == "bundled":
        return heldout_retention_set(num_examples, num_distractors, seed)
    root = Path(data_dir or "data")
    if dataset == "squad":
        dev = root / "squad" / "dev-v2.0.json"
        src = str(dev) if dev.exists() else "rajpurkar/squad_v2"
        examples = qa.load_squad(src, tok, 3, num_examples, split="validation",
                                 indices=qa.authors_indices(root / "squad" / "indices_squad_3.npy"))
        train = str(dev).replace("dev", "train") if dev.exists() else src
        paras = (c for c, _ in qa.squad_paragraphs(train, split="train"))
        return examples, qa.unrelated_contexts(paras, tok, num_distractors, 768, 512)
    if dataset == "nq":
        dev = root / "nq" / "v1.0-simplified_nq-dev-all.jsonl"
        examples = qa.load_nq(dev, tok, 4, num_examples, indices=qa.authors_indices(root / "nq" / "indices_nq_4.npy"))
        train = root / "nq" / "v1.0-simplified_simplified-nq-train.jsonl"
        paras = (c for _, _, c, _ in qa.nq_examples(train))
        return examples, qa.unrelated_contexts(paras, tok, num_distractors, 512, 512)
    raise ValueError(f"unknown retention dataset {dataset!r} (bundled, squad, nq)")


def run_figure5(model, tok, datasets=("bundled",), num_examples: int = 40, num_updates: int = 15,
                num_distractors: int = 30, seed: int = 0, carry_over: bool = False, data_dir=None,
                progress: bool = True, batch_size: int = 1):
    """All rows of Figure 5 for one model, as a DataFrame (dataset, id, condition, step, hit, pred)."""
    import pandas as pd
    rows = []
    for ds in datasets:
        examples, distractors = retention_data(ds, tok, num_examples, num_distractors, seed, data_dir)
        for r in run_retention(model, tok, examples, distractors, num_updates, carry_over=carry_over,
                               in_prompt=True, progress=progress, batch_size=batch_size):
            rows.append({"dataset": ds, **r})
    return pd.DataFrame(rows)


def summarize(df):
    """Accuracy with Wilson intervals per (dataset, condition, step)."""
    import pandas as pd
    out = []
    for (ds, cond, step), g in df.groupby(["dataset", "condition", "step"]):
        k, n = int(g["hit"].sum()), len(g)
        lo, hi = wilson(k, n)
        out.append(dict(dataset=ds, condition=cond, step=step, accuracy=k / n, n=n, ci_low=lo, ci_high=hi))
    return pd.DataFrame(out)
