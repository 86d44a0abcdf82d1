"""Long-context QA (paper §4.4, Figure 4 and Table 2) with LongBench's own prompts and scorer.

* Scorer: LongBench's `qa_f1_score` rewritten from its definition - lowercase, drop punctuation, drop the
  articles a/an/the, split on whitespace, token-level F1; the maximum over gold answers; dataset score = 100 x
  mean, rounded to 2 decimals. LongBench keeps only a prediction's first line for trec, triviaqa, samsum and lsht
  (none of the paper's six tasks); `first_line=True` applies that cut anyway, reported separately.
* MemoryLLM protocol (the authors' `longbench_pred.py`): the prompt is truncated to `max_length - max_gen`
  tokens (left: keep the end, as the authors; middle: LongBench's own rule), then cut from the end into chunks:
  the last `chunk - max_gen` tokens are the generation prompt, the earlier `chunk`-token pieces are written into
  memory in order; the pool is restored after every example.
* Baselines on the same data: the backbone alone with the prompt truncated to a window, or up to its maximum
  context, in its chat template when it has one (LongBench's rule for chat models: SmolLM2-Instruct answers
  the bare prompt with an empty turn most of the time; MemoryLLM was trained on plain text and reads the bare
  prompt, as the authors' base-model MemoryLLM-7B); MemoryLLM after BM25 retrieval (`bm25s`) of the best
  context chunks (Table 2).
"""
from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import torch
import yaml

from ..editors.common import base_only
from ..paths import LONGBENCH_CONFIG

TASKS = ["narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique"]
_CFG = None


def config() -> dict:
    global _CFG
    if _CFG is None:
        _CFG = yaml.safe_load((LONGBENCH_CONFIG).read_text())
    return _CFG


# ---------------------------------------------------------------------------------------------- scorer
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def qa_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def first_line(prediction: str) -> str:
    return prediction.lstrip("\n").split("\n")[0]


def example_score(task: str, prediction: str, answers: list[str], cut_first_line: bool | None = None) -> float:
    if cut_first_line is None:
        cut_first_line = task in config()["first_line_tasks"]
    if cut_first_line:
        prediction = first_line(prediction)
    return max((qa_f1(prediction, a) for a in answers), default=0.0)


def dataset_score(scores) -> float:
    scores = list(scores)
    return round(100 * sum(scores) / len(scores), 2) if scores else float("nan")


# ---------------------------------------------------------------------------------------------- data
# `THUDM/LongBench` is a loading-script dataset, which datasets>=4 refuses to run. The default hub source is the
# script-free copy that lm-evaluation-harness's own LongBench tasks read (config = task, split test; it names the
# question field `question` where LongBench's jsonl says `input`). Not checked here (no hub access): if it fails
# or differs, download LongBench's data.zip and pass the unzipped folder as `source`.
LONGBENCH_HUB = "Xnhyacinth/LongBench"
LONGBENCH_ZIP = "https://huggingface.co/datasets/THUDM/LongBench/resolve/main/data.zip"


def _longbench_rows(rows, where: str) -> list[dict]:
    out = []
    for i, row in enumerate(rows):
        row = dict(row)
        if "input" not in row and "question" in row:      # the hub copy's field name
            row["input"] = row["question"]
        missing = [k for k in ("context", "input", "answers") if k not in row]
        if missing:
            raise ValueError(f"{where}: row {i} lacks LongBench field(s) {missing} (has {sorted(row)})")
        if isinstance(row["answers"], str):
            row["answers"] = [row["answers"]]
        out.append(row)
    return out


def _read_file(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pandas as pd
        return [{k: v.tolist() if hasattr(v, "tolist") else v for k, v in r.items()}   # arrays -> lists
                for r in pd.read_parquet(path).to_dict("records")]
    return [json.loads(line) for line in path.open() if line.strip()]


def load_longbench(task: str, source: str | None = None) -> list[dict]:
    """Examples of one task in LongBench's format (`context`, `input`, `answers`, ...). `source`:
    a .jsonl or .parquet file; a folder in LongBench's layout (`<task>.jsonl` / `<task>.parquet`, directly or
    under `data/`, as LongBench's data.zip unpacks); a hub dataset id with one config per task and a test split;
    or None for `LONGBENCH_HUB`."""
    if source is not None and Path(source).exists():
        path = Path(source)
        if path.is_dir():
            cands = [path / sub / f"{task}{ext}" for sub in (".", "data") for ext in (".jsonl", ".parquet")]
            found = [c for c in cands if c.is_file()]
            if not found:
                raise FileNotFoundError(f"no {task}.jsonl or {task}.parquet in {path} or {path / 'data'}")
            path = found[0]
        return _longbench_rows(_read_file(path), str(path))
    from datasets import load_dataset
    hub = source or LONGBENCH_HUB
    try:
        rows = load_dataset(hub, task, split="test")
    except RuntimeError as e:
        if "scripts are no longer supported" not in str(e):
            raise
        raise RuntimeError(f"{hub} is a loading-script dataset, which datasets>=4 cannot read. Use the script-free "
                           f"copy (source=None: {LONGBENCH_HUB}), or download {LONGBENCH_ZIP}, unzip it and pass "
                           f"the folder as source.") from e
    return _longbench_rows(rows, f"{hub}/{task}")


def build_prompt(task_template: str, example: dict) -> str:
    return config()["prompts"][task_template].format(context=example["context"], input=example["input"])


def truncate(ids: list[int], max_tokens: int, side: str = "left") -> list[int]:
    """left: keep the last tokens (the authors' script); middle: keep both ends (LongBench's rule)."""
    if len(ids) <= max_tokens:
        return list(ids)
    if side == "left":
        return list(ids[-max_tokens:])
    if side == "middle":
        half = max_tokens // 2
        return list(ids[:half]) + list(ids[len(ids) - (max_tokens - half):])
    raise ValueError(f"truncation side must be 'left' or 'middle', got {side!r}")


def split_for_memory(ids: list[int], chunk: int, max_gen: int) -> tuple[list[list[int]], list[int]]:
    """The authors' cut, from the end: the generation prompt is the last `chunk - max_gen` tokens, then
    `chunk`-token pieces going backwards; the earliest piece is the remainder. Returns (chunks in reading order,
    prompt)."""
    first = chunk - max_gen
    if first <= 0:
        raise ValueError("chunk must be longer than the generation length")
    prompt, rest = list(ids[-first:]), list(ids[:-first]) if len(ids) > first else []
    chunks = []
    while rest:
        chunks.append(rest[-chunk:])
        rest = rest[:-chunk]
    return chunks[::-1], prompt


# ---------------------------------------------------------------------------------------------- predictions
@torch.no_grad()
def _generate(model, ids, max_gen, use_memory):
    t = torch.tensor([ids], device=model.device)
    out = model.generate(t, max_new_tokens=max_gen, use_memory=use_memory, do_sample=False)
    return out[0, t.shape[1]:].tolist()


def attention_state_mb(model, tokens: int, with_pool: bool) -> float:
    """What attention keeps while answering, in MB: the key/value cache of `tokens` tokens, plus, for MemoryLLM,
    the pool θ and its cached keys/values (N + 1 rows per layer). An exact count, not a measurement."""
    c = model.base.config
    el = next(model.base.parameters()).element_size()
    head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_row = 2 * c.num_hidden_layers * c.num_key_value_heads * head * el
    total = tokens * kv_row
    if with_pool:
        total += model.memory.numel() * model.memory.element_size() + (model.N + 1) * kv_row
    return total / 2 ** 20


def predict_memoryllm(model, tok, example: dict, template: str, max_length: int, chunk: int,
                      side: str = "left", min_chunk: int = 16, info: dict | None = None) -> str:
    """Write all but the last chunk of the (truncated) prompt into memory, answer from the last one. `info`, if
    given, receives the attention state size (attention_state_mb)."""
    max_gen = config()["max_new_tokens"][template]
    ids = truncate(tok(build_prompt(template, example), add_special_tokens=False).input_ids, max_length - max_gen,
                   side)
    chunks, prompt = split_for_memory(ids, chunk, max_gen)
    with model.memory_snapshot():
        for c in chunks:
            if len(c) >= min_chunk:      # the authors' earliest remainder can be a few tokens: skip those
                model.inject_memory(torch.tensor([c], device=model.device))
        out = _generate(model, prompt, max_gen, True)
    if info is not None:
        info["state_mb"] = attention_state_mb(model, len(prompt) + len(out), with_pool=True)
    return tok.decode(out, skip_special_tokens=True)


def chat_wrap(tok) -> tuple[list[int], list[int]]:
    """Token ids before and after a user message in the tokenizer's chat template (([], []) without one).
    LongBench's pred.py wraps the truncated prompt in the chat template for chat models on its QA tasks."""
    if not getattr(tok, "chat_template", None):
        return [], []
    marker = "\x00"
    text = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                   add_generation_prompt=True)
    pre, post = text.split(marker)
    return tok(pre, add_special_tokens=False).input_ids, tok(post, add_special_tokens=False).input_ids


def predict_backbone(model, tok, example: dict, template: str, max_length: int, side: str = "middle",
                     info: dict | None = None, chat: bool = True) -> str:
    """The plain backbone (adapters off, no memory) with the prompt truncated to `max_length` tokens, in its chat
    template if it has one and `chat` (LongBench's rule for chat models; the template's tokens count in the
    length)."""
    max_gen = config()["max_new_tokens"][template]
    pre, post = chat_wrap(tok) if chat else ([], [])
    ids = truncate(tok(build_prompt(template, example), add_special_tokens=False).input_ids,
                   max_length - max_gen - len(pre) - len(post), side)
    ids = pre + ids + post
    with base_only(model):
        out = _generate(model, ids, max_gen, False)
    if info is not None:
        info["state_mb"] = attention_state_mb(model, len(ids) + len(out), with_pool=False)
    return tok.decode(out, skip_special_tokens=True)


def bm25_context(tok, example: dict, budget: int, piece: int = 256) -> dict:
    """The example with its context reduced to the BM25-best `piece`-token parts (query = the question), kept
    in document order, up to `budget` tokens (Table 2's MemoryLLM-all-BM25)."""
    import bm25s
    ids = tok(example["context"], add_special_tokens=False).input_ids
    parts = [ids[i:i + piece] for i in range(0, len(ids), piece)]
    if len(parts) * piece <= budget:
        return example
    texts = [tok.decode(p) for p in parts]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    k = max(1, budget // piece)
    idx, _ = retriever.retrieve(bm25s.tokenize([example["input"]], stopwords="en", show_progress=False),
                                k=min(k, len(texts)), show_progress=False)
    chosen = sorted(int(i) for i in idx[0])
    return dict(example, context="".join(texts[i] for i in chosen))


def evidence_location(tok, example: dict, template: str, max_length: int, chunk: int, side: str = "left",
                      min_chunk: int = 16):
    """Where `predict_memoryllm` puts the evidence: "prompt" (the generation chunk), "memory-j" (written j chunks
    before the prompt), "cut" (truncated away or in a skipped remainder) or None when unknown. The evidence
    passage is the one whose title line (LongBench's "Passage i:\n<title>" layout, as the bundled set) occurs in
    the question; its last token is followed through the same `truncate` and `split_for_memory` calls."""
    prompt = build_prompt(template, example)
    ends = [m.end() for m in re.finditer(r"Passage \d+:\n(.+)\n[^\n]*", prompt)
            if m.group(1).strip() and m.group(1).strip() in example["input"]]
    if not ends:
        return None
    max_gen = config()["max_new_tokens"][template]
    where = len(tok(prompt[:max(ends)], add_special_tokens=False).input_ids) - 1      # the passage's last token
    positions = truncate(list(range(len(tok(prompt, add_special_tokens=False).input_ids))), max_length - max_gen,
                         side)
    chunks, gen_prompt = split_for_memory(positions, chunk, max_gen)
    if where in gen_prompt:
        return "prompt"
    back = next((len(chunks) - i for i, c in enumerate(chunks) if where in c and len(c) >= min_chunk), None)
    return "cut" if back is None else f"memory-{back}"


# ---------------------------------------------------------------------------------------------- Figure 4 / Table 2
def task_examples(task: str, tok, n: int, context_tokens: int, source: str | None = None, seed: int = 0):
    """(examples, prompt template) of a LongBench task or a bundled kind (`bundled_single`, `bundled_twohop`)."""
    if task.startswith("bundled_"):
        from ..data.longqa import TEMPLATE, bundled_longqa
        return bundled_longqa(tok, task, n, context_tokens, seed), TEMPLATE[task]
    return load_longbench(task, source)[:n], task


def run_longbench(model, tok, tasks, lengths, n: int, chunk: int, window: int, full_max: int,
                  methods=("memoryllm", "backbone_window", "backbone_full", "memoryllm_bm25"),
                  side: str = "left", source: str | None = None, seed: int = 0, progress: bool = True,
                  chat: bool = True, alt_chunk: int | None = None):
    """Predictions and scores for every (task, max length, method, example): a tidy DataFrame with the raw
    prediction, its F1 (LongBench rule) and its F1 after the first-line cut, plus seconds per prediction.
    `memoryllm_alt` is MemoryLLM writing `alt_chunk`-token chunks instead of `chunk` (a second protocol)."""
    if "memoryllm_alt" in methods and not alt_chunk:
        raise ValueError("method memoryllm_alt needs alt_chunk")
    import time

    import pandas as pd
    from tqdm.auto import tqdm
    rows = []
    jobs = [(t, L, m) for t in tasks for L in lengths for m in methods]
    examples = {t: task_examples(t, tok, n, max(lengths), source, seed) for t in tasks}
    for task, L, method in tqdm(jobs, desc="longbench", disable=not progress):
        data, template = examples[task]
        for ex in data:
            t0, info = time.perf_counter(), {}
            if method in ("memoryllm", "memoryllm_alt"):
                c = chunk if method == "memoryllm" else alt_chunk
                pred = predict_memoryllm(model, tok, ex, template, L, c, side, info=info)
            elif method == "memoryllm_bm25":   # Table 2: BM25 picks a quarter of the length, MemoryLLM reads it
                pred = predict_memoryllm(model, tok, bm25_context(tok, ex, L // 4), template, L, chunk, side,
                                         info=info)
            elif method == "backbone_window":
                pred = predict_backbone(model, tok, ex, template, min(L, window), "middle", info=info, chat=chat)
            elif method == "backbone_full":
                pred = predict_backbone(model, tok, ex, template, min(L, full_max), "middle", info=info, chat=chat)
            else:
                raise ValueError(f"unknown method {method!r}")
            where = evidence_location(tok, ex, template, L, chunk, side) if method == "memoryllm" else None
            rows.append({"task": task, "max_length": L, "method": method, "id": ex["_id"], "pred": pred,
                         "evidence": where,
                         "answers": json.dumps(ex["answers"]),
                         "f1": example_score(template, pred, ex["answers"]),
                         "f1_first_line": example_score(template, pred, ex["answers"], cut_first_line=True),
                         "seconds": time.perf_counter() - t0, "state_mb": info["state_mb"]})
    return pd.DataFrame(rows)


def _ci(scores, z: float = 1.96) -> tuple[float, float]:
    """Normal 95% interval of a dataset score (100 x mean F1), clipped to [0, 100]; samples here are small."""
    x = [float(v) for v in scores]
    n = len(x)
    if n < 2:
        return float("nan"), float("nan")
    mean = sum(x) / n
    half = z * (sum((v - mean) ** 2 for v in x) / (n - 1) / n) ** 0.5
    return round(max(0.0, 100 * (mean - half)), 2), round(min(100.0, 100 * (mean + half)), 2)


def summarize_longbench(df):
    """LongBench dataset scores (100 x mean F1, 2 decimals) per task, length and method, with normal 95%
    intervals (`f1_ci_low` ...)."""
    g = df.groupby(["task", "max_length", "method"])
    return g.agg(f1=("f1", lambda s: dataset_score(s)), f1_first_line=("f1_first_line", lambda s: dataset_score(s)),
                 n=("f1", "size"), seconds=("seconds", "mean"), state_mb=("state_mb", "mean"),
                 f1_ci_low=("f1", lambda s: _ci(s)[0]), f1_ci_high=("f1", lambda s: _ci(s)[1]),
                 f1_first_line_ci_low=("f1_first_line", lambda s: _ci(s)[0]),
                 f1_first_line_ci_high=("f1_first_line", lambda s: _ci(s)[1])).reset_index()


def evidence_place(where: str) -> str:
    """An `evidence_location` as a coarse place: "prompt", "cut", or memory 1 / 2-3 / 4+ chunks back."""
    if where in ("prompt", "cut"):
        return where
    j = int(where.split("-")[1])
    return "memory, 1 chunk back" if j == 1 else "memory, 2-3 chunks back" if j <= 3 else "memory, 4+ chunks back"


def evidence_breakdown(df):
    """MemoryLLM's scores grouped by where the protocol put the evidence passage (bundled sets only: rows with an
    `evidence` location): n, F1 and first-line F1 per (task, place)."""
    mem = df[(df.method == "memoryllm") & df.evidence.notna()]
    return (mem.assign(place=mem.evidence.map(evidence_place)).groupby(["task", "place"])
            .agg(n=("f1", "size"), f1=("f1", dataset_score), f1_first_line=("f1_first_line", dataset_score))
            .reset_index())
