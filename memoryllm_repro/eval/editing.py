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


# Table 1 of the paper (Llama-2-7B), for printing beside ours: Score, Efficacy, Generalization, Specificity.
PAPER_TABLE1 = {
    "zsre": {"Llama2-7B": (55.6, 55.9, 54.7, 56.3), "MemoryLLM-7B": (51.2, 50.0, 49.1, 54.8),
             "FT": (50.3, 78.6, 80.6, 29.0), "FT-L": (69.8, 81.4, 76.8, 56.6), "ROME": (69.3, 88.7, 70.2, 56.3),
             "MemoryLLM-7B (w/ EF)": (79.2, 99.8, 96.7, 57.1)},
    "counterfact": {"Llama2-7B": (20.7, 13.7, 16.6, 83.4), "MemoryLLM-7B": (22.6, 15.7, 17.6, 82.1),
                    "FT": (10.0, 99.7, 96.9, 3.6), "FT-L": (33.8, 47.2, 18.0, 83.3),
                    "ROME": (69.2, 82.6, 75.2, 55.8), "IKE": (70.7, 99.8, 96.2, 45.4),
                    "MemoryLLM-7B (w/ EF)": (75.3, 98.5, 82.2, 57.0)},
}


def run_table1(model, tok, datasets: dict, methods: dict, progress: bool = True):
    """Per-record scores for every (dataset, method): each edit applied to a fresh model (the editor restores it).
    `datasets`: {"counterfact": records, "zsre": records}; `methods`: {name: editor}."""
    import pandas as pd
    from tqdm.auto import tqdm
    rows = []
    for ds, records in datasets.items():
        score = counterfact_scores if ds == "counterfact" else zsre_scores
        for name, editor in methods.items():
            for rec in tqdm(records, desc=f"{ds} / {name}", disable=not progress):
                with editor(model, tok, rec):
                    s = score(model, tok, rec, prefix=getattr(editor, "prefix", ""), **editor.scoring)
                rows.append({"dataset": ds, "method": name, "record": rec.get("case_id", rec.get("src")), **s})
    return pd.DataFrame(rows)


def summarize_table1(df):
    import pandas as pd
    out = []
    for (ds, m), g in df.groupby(["dataset", "method"], sort=False):
        out.append({"dataset": ds, "method": m, **table_row(g.to_dict("records"))})
    return pd.DataFrame(out)
