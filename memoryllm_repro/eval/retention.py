"""Knowledge retention (paper §4.5, Figure 5; the authors' `test_qa_memory.py`).

Per example: write the relevant context at update 1, then one unrelated context per update; after every write,
greedily generate 10 tokens for the question; a hit is the answer appearing (case-sensitive substring, as the
authors' `calculate_exact_hit_accuracy`) in those tokens. The pool is restored between examples by default (the
authors' default carried it over: `carry_over=True`). Reference points: the "borderline" (the question asked of
the warm pool with its context never written) and the context placed in the prompt instead of in memory.
"""
from __future__ import annotations

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
    """Tidy records: one row per (example, condition, step). condition in {"memory", "borderline",
    "context_in_prompt", "base_context_in_prompt"}; step = number of updates since the context was written (1 =
    right after it), 0 for the reference conditions."""
    rows = []
    bar = tqdm(examples, desc="retention", disable=not progress)
    for ex in bar:
        q = question_text(ex)
        snap = model.memory_snapshot() if not carry_over else _null()
        with snap:
            if borderline:
                pred = answer(model, tok, q, max_new_tokens)
                rows.append(dict(id=ex.id, condition="borderline", step=0, hit=hit(pred, ex.answer), pred=pred))
            if in_prompt:
                prompt = context_text(ex) + "\n" + q
                pred = answer(model, tok, prompt, max_new_tokens)
                rows.append(dict(id=ex.id, condition="context_in_prompt", step=0, hit=hit(pred, ex.answer),
                                 pred=pred))
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


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
