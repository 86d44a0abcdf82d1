"""Editing metrics as ROME / EditingLlama define them (Table 1), for any method that edits a model.

CounterFact: efficacy = P(new) > P(true) on the edit prompt; generalization = the same on paraphrase prompts;
specificity = P(true) > P(new) on neighborhood prompts (other subjects with the same true object); each a
success rate x100, averaged per record then over records. zsRE: token-level accuracy (teacher forced argmax)
of the new answer on the question and its rephrase, and of the unrelated answer on the `loc` question.
Score = harmonic mean of the three.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from scipy.stats import hmean

from ..backbones import load_tokenizer
from ..data.editing import bundled_counterfact, bundled_zsre, edit_fields
from ..editors import FT, FTL, IKE, ROME, MemoryEdit, NoEdit, OnBackbone
from ..editors.common import right_pad
from ..model import MemoryLLM


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


def table1_methods(names, ike_demos: list[dict], rome_layer: int = 5) -> dict:
    """The editors of Table 1 by name, in the paper's order, restricted to `names`. The baselines run on the plain
    backbone (LoRA off, no memory), as the paper's ran on Llama-2-7B; IKE draws its demonstrations from
    `ike_demos` (CounterFact records)."""
    known = ["backbone", "MemoryLLM", "FT", "FT-L", "ROME", "IKE", "MemoryLLM (w/ EF)"]
    unknown = set(names) - set(known)
    if unknown:
        raise ValueError(f"unknown Table 1 methods {sorted(unknown)} (known: {known})")
    make = {"backbone": lambda: NoEdit(use_memory=False, adapters=False), "MemoryLLM": lambda: NoEdit(use_memory=True),
            "FT": lambda: OnBackbone(FT()), "FT-L": lambda: OnBackbone(FTL()),
            "ROME": lambda: OnBackbone(ROME(layer=rome_layer)), "IKE": lambda: OnBackbone(IKE(ike_demos)),
            "MemoryLLM (w/ EF)": MemoryEdit}
    return {k: make[k]() for k in known if k in names}


METRICS = ("score", "efficacy", "generalization", "specificity")


def paper_layout(table):
    """`summarize_table1` output in the paper's layout: one row per method, columns "<dataset> <metric>" for zsRE
    then CounterFact (Score, Efficacy, Generalization, Specificity), rounded to 0.1; None where not run."""
    import pandas as pd
    rows = []
    for m in table.method.unique():
        r = {"method": m}
        for ds in ("zsre", "counterfact"):
            s = table[(table.method == m) & (table.dataset == ds)]
            for k in METRICS:
                r[f"{ds} {k}"] = round(float(s[k].iloc[0]), 1) if len(s) else None
        rows.append(r)
    return pd.DataFrame(rows)


def paper_table1():
    """The paper's Table 1 (Llama-2-7B) in the same layout as `paper_layout`."""
    import pandas as pd
    methods = dict.fromkeys([*PAPER_TABLE1["counterfact"], *PAPER_TABLE1["zsre"]])
    return pd.DataFrame([{"method": m, **{f"{ds} {k}": v for ds in PAPER_TABLE1
                                          for k, v in zip(METRICS, PAPER_TABLE1[ds].get(m, (None,) * 4))}}
                         for m in methods])


def write_table1(ours, header: str, directory, stem: str = "table1_editing") -> list[Path]:
    """Our table as CSV, Markdown (with the paper's numbers below it) and LaTeX under `directory`."""
    d = Path(directory)
    paths = [d / f"{stem}.csv", d / f"{stem}.md", d / f"{stem}.tex"]
    ours.to_csv(paths[0], index=False)
    paths[1].write_text(f"{header}\n\n" + ours.to_markdown(index=False) + "\n\nPaper (Llama-2-7B):\n\n"
                        + paper_table1().to_markdown(index=False) + "\n")
    paths[2].write_text(ours.to_latex(index=False, na_rep="--", float_format="%.1f"))
    return paths


# ---------------------------------------------------------------------------------------------- bundled sets
def filter_known(model, tok, records: list[dict]) -> list[dict]:
    """Keep the records whose true object the unedited backbone prefers to the new one on the edit prompt
    (CounterFact) or the question (zsRE), so an edit has something to change."""
    keep = []
    for r in records:
        prompt, true, new = edit_fields(r)
        lp_true, lp_new = target_logprobs(model, tok, [(prompt, true), (prompt, new)], use_memory=False)
        if lp_true > lp_new:
            keep.append(r)
    return keep


def write_bundled(out_dir="data/editing", seed: int = 0) -> dict:
    """Build the bundled sets (`data.editing`), keep what SmolLM2 knows, write them in ROME's formats (the files
    under memoryllm_repro/resources/editing/). Returns {file: (kept, built)}."""
    model = MemoryLLM.from_base("smollm2-135m", num_blocks=1, num_tokens=16)
    tok = load_tokenizer("smollm2-135m")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, records in (("counterfact_bundled.json", bundled_counterfact(seed)),
                          ("zsre_bundled.json", bundled_zsre(seed))):
        kept = filter_known(model, tok, records)
        (out / name).write_text(json.dumps(kept, indent=1))
        counts[name] = (len(kept), len(records))
    return counts


if __name__ == "__main__":
    print(write_bundled())
