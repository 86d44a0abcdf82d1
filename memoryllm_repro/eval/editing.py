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


def right_pad(seqs: list[list[int]], device) -> torch.Tensor:
    """Token lists as one batch, right-padded with each row's last token: a causal model never attends to the
    right padding (every real token precedes it), so each row computes as it would alone."""
    width = max(map(len, seqs))
    return torch.tensor([s + [s[-1]] * (width - len(s)) for s in seqs], device=device)


@torch.no_grad()
def _target_logits(model, tok, pairs, use_memory: bool = True):
    """Next-token logits over each target, for many (prompt, target) pairs in one right-padded forward pass.
    Only the positions from the earliest target on are projected to the vocabulary (IKE's prompts share a long
    prefix). Returns [(logits [len(target), V], target ids)]."""
    seqs = [(tok(prompt, add_special_tokens=False).input_ids, tok(" " + target.strip(), add_special_tokens=False)
             .input_ids) for prompt, target in pairs]
    ids = right_pad([p + t for p, t in seqs], model.device)
    width, first = ids.shape[1], min(len(p) for p, _ in seqs) - 1
    logits = model(ids, use_memory=use_memory, logits_to_keep=width - first).logits
    return [(logits[i, len(p) - 1 - first:len(p) - 1 - first + len(t)].float(), torch.tensor(t, device=model.device))
            for i, (p, t) in enumerate(seqs)]


def target_logprobs(model, tok, pairs, use_memory: bool = True) -> list[float]:
    """log P(target | prompt), summed over the target's tokens (target gets a leading space), per pair."""
    return [lg.log_softmax(-1).gather(-1, t[:, None]).sum().item()
            for lg, t in _target_logits(model, tok, pairs, use_memory)]


def target_logprob(model, tok, prompt: str, target: str, use_memory: bool = True) -> float:
    return target_logprobs(model, tok, [(prompt, target)], use_memory)[0]


def token_accuracies(model, tok, pairs, use_memory: bool = True) -> list[float]:
    """Teacher-forced share of the target's tokens that are the argmax, per pair (zsRE's metric)."""
    return [(lg.argmax(-1) == t).float().mean().item() for lg, t in _target_logits(model, tok, pairs, use_memory)]


def token_accuracy(model, tok, prompt: str, target: str, use_memory: bool = True) -> float:
    return token_accuracies(model, tok, [(prompt, target)], use_memory)[0]


def counterfact_scores(model, tok, record: dict, use_memory: bool = True, prefix: str = "") -> dict:
    """Success rates of one CounterFact record under the model's current state (edited or not). `prefix` is
    prepended to every prompt (in-context editing). All prompts x {new, true} go through one forward pass."""
    rw = record["requested_rewrite"]
    new, true = rw["target_new"]["str"], rw["target_true"]["str"]
    edit = [rw["prompt"].format(rw["subject"])]
    para = list(record.get("paraphrase_prompts") or [])
    nb = list(record.get("neighborhood_prompts") or [])
    prompts = edit + para + nb
    lp = target_logprobs(model, tok, [(prefix + p, o) for p in prompts for o in (new, true)], use_memory)
    prefers_new = [lp[2 * i] > lp[2 * i + 1] for i in range(len(prompts))]
    out = {"efficacy": float(prefers_new[0])}
    g, n = prefers_new[1:1 + len(para)], prefers_new[1 + len(para):]
    out["generalization"] = sum(g) / len(g) if g else float("nan")
    out["specificity"] = sum(not x for x in n) / len(n) if n else float("nan")
    return out


def zsre_scores(model, tok, record: dict, use_memory: bool = True, prefix: str = "") -> dict:
    acc = token_accuracies(model, tok, [(prefix + record["src"], record["alt"]),
                                        (prefix + record["rephrase"], record["alt"]),
                                        (prefix + record["loc"], record["loc_ans"])], use_memory)
    return dict(zip(("efficacy", "generalization", "specificity"), acc))


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
