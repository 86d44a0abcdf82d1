"""Knowledge retention (paper §4.5, Figure 5; the authors' `test_qa_memory.py`).

Per example: write the relevant context at update 1, then one unrelated context per update; after every write,
greedily generate 10 tokens for the question; a hit is the answer appearing (case-sensitive substring, as the
authors' `calculate_exact_hit_accuracy`) in those tokens. The pool is restored between examples by default (the
authors' default carried it over: `carry_over=True`). Reference points: the "borderline" (the question asked of
the warm pool with its context never written) and the context placed in the prompt instead of in memory.
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass
class QAExample:
    id: str
    context: str
    question: str
    answer: str


def hit(prediction: str, answer: str) -> bool:
    """The authors' exact-hit rule: the stripped answer is a substring of the prediction."""
    answer = answer.replace("</s>", "").strip()
    return bool(answer) and answer in prediction


def context_text(ex: QAExample) -> str:
    return "Context: " + ex.context


def question_text(ex: QAExample) -> str:
    return f"Question: {ex.question} Answer:"


def _ids(tok, text, max_tokens=512):
    return tok(text, return_tensors="pt", add_special_tokens=False, truncation=True,
               max_length=max_tokens).input_ids


@torch.no_grad()
def answer(model, tok, prompt: str, max_new_tokens: int = 10, use_memory: bool = True) -> str:
    ids = _ids(tok, prompt).to(model.device)
    out = model.generate(ids, max_new_tokens=max_new_tokens, use_memory=use_memory, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@torch.no_grad()
def run_retention(model, tok, examples: list[QAExample], distractors: list[str], num_updates: int,
                  carry_over: bool = False, max_new_tokens: int = 10, borderline: bool = True,
                  in_prompt: bool = False, progress: bool = True) -> list[dict]:
    """Tidy records: one row per (example, condition, step). Conditions: "memory" (the protocol), "borderline"
    (the question asked of the warm pool, context never written), "context_in_prompt" (the same model, memory off,
    context in the prompt: the upper reference) and "base_context_in_prompt" (the backbone without LoRA, context in
    the prompt). step = updates since the context was written (1 = right after it); 0 for references."""
    rows = []
    bar = tqdm(examples, desc="retention", disable=not progress)
    for ex in bar:
        q = question_text(ex)
        snap = model.memory_snapshot() if not carry_over else contextlib.nullcontext()
        with snap:
            if borderline:
                pred = answer(model, tok, q, max_new_tokens)
                rows.append(dict(id=ex.id, condition="borderline", step=0, hit=hit(pred, ex.answer), pred=pred))
            if in_prompt:
                prompt = context_text(ex) + "\n" + q
                pred = answer(model, tok, prompt, max_new_tokens, use_memory=False)
                rows.append(dict(id=ex.id, condition="context_in_prompt", step=0, hit=hit(pred, ex.answer),
                                 pred=pred))
                with base_only(model):
                    pred = answer(model, tok, prompt, max_new_tokens, use_memory=False)
                rows.append(dict(id=ex.id, condition="base_context_in_prompt", step=0,
                                 hit=hit(pred, ex.answer), pred=pred))
            model.inject_memory(_ids(tok, context_text(ex)).to(model.device))
            for step in range(1, num_updates + 2):
                pred = answer(model, tok, q, max_new_tokens)
                rows.append(dict(id=ex.id, condition="memory", step=step, hit=hit(pred, ex.answer), pred=pred))
                if step <= num_updates:
                    model.inject_memory(_ids(tok, distractors[(step - 1) % len(distractors)]).to(model.device))
    return rows


def base_only(model):
    """The backbone without its LoRA deltas (a no-op for an untrained wrapper)."""
    return model.adapters_disabled() if model.config.lora else contextlib.nullcontext()


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
    from pathlib import Path

    from ..data import qa_datasets as qa
    if dataset == "bundled":
        from ..data.retention_set import heldout_retention_set
        return heldout_retention_set(num_examples, num_distractors, seed)
    root = Path(data_dir or "data")
    if dataset == "squad":
        dev = root / "squad" / "dev-v2.0.json"
        src = str(dev) if dev.exists() else "rajpurkar/squad_v2"
        examples = qa.load_squad(src, tok, 3, num_examples, split="validation")
        train = str(dev).replace("dev", "train") if dev.exists() else src
        paras = (c for c, _ in qa.squad_paragraphs(train, split="train"))
        return examples, qa.unrelated_contexts(paras, tok, num_distractors, 768, 512)
    if dataset == "nq":
        dev = root / "nq" / "v1.0-simplified_nq-dev-all.jsonl"
        examples = qa.load_nq(dev, tok, 4, num_examples)
        train = root / "nq" / "v1.0-simplified_simplified-nq-train.jsonl"
        paras = (c for _, _, c, _ in qa.nq_examples(train))
        return examples, qa.unrelated_contexts(paras, tok, num_distractors, 512, 512)
    raise ValueError(f"unknown retention dataset {dataset!r} (bundled, squad, nq)")


def run_figure5(model, tok, datasets=("bundled",), num_examples: int = 40, num_updates: int = 15,
                num_distractors: int = 30, seed: int = 0, carry_over: bool = False, data_dir=None,
                progress: bool = True):
    """All rows of Figure 5 for one model, as a DataFrame (dataset, id, condition, step, hit, pred)."""
    import pandas as pd
    rows = []
    for ds in datasets:
        examples, distractors = retention_data(ds, tok, num_examples, num_distractors, seed, data_dir)
        for r in run_retention(model, tok, examples, distractors, num_updates, carry_over=carry_over,
                               in_prompt=True, progress=progress):
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
