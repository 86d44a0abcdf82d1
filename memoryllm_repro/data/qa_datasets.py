"""Retention data in the formats of the authors' evaluation scripts (github.com/wangyu-ustc/MemoryLLM): SQuAD v2
JSON and NaturalQuestions jsonl (the full `nq-dev-all` format with `document_tokens`, or the simplified train
format with `document_text`), from local files or hub names via `datasets`.

Filters as the paper: answerable SQuAD questions whose first answer has at most 3 tokens; NQ examples with a short
answer of at most 4 tokens (counted with the model's tokenizer). Unrelated contexts come from the train split:
consecutive paragraphs joined until a chunk has at least 768 tokens (512 for NQ), then cut to 512 tokens.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from .qa import QAExample


def _n_tokens(tok, text):
    return len(tok(text, add_special_tokens=False).input_ids) if tok is not None else len(text.split())


def _open(path):
    path = Path(path)
    return gzip.open(path, "rt") if path.suffix == ".gz" else path.open()


def squad_paragraphs(source, split="validation"):
    """(context, [(id, question, answer or None)]) per paragraph; `source` is a v2 JSON file or a hub name."""
    if Path(source).exists():
        data = json.load(_open(source))["data"]
        for article in data:
            for para in article["paragraphs"]:
                qas = [(q["id"], q["question"], None if q.get("is_impossible") or not q["answers"]
                        else q["answers"][0]["text"]) for q in para["qas"]]
                yield para["context"], qas
    else:
        from datasets import load_dataset
        last, qas = None, []
        for row in load_dataset(source, split=split):
            if row["context"] != last and last is not None:
                yield last, qas
                qas = []
            last = row["context"]
            texts = row["answers"]["text"]
            qas.append((row["id"], row["question"], texts[0] if texts else None))
        if last is not None:
            yield last, qas


def load_squad(source, tokenizer=None, max_answer_tokens: int = 3, num: int | None = None, split="validation",
               indices=None) -> list[QAExample]:
    """Answerable questions with short answers. `indices` (e.g. the authors' `indices_squad_3.npy`) selects
    positions in the filtered list, as their loader does."""
    out = []
    for context, qas in squad_paragraphs(source, split):
        for qid, q, a in qas:
            if a is None or _n_tokens(tokenizer, a) > max_answer_tokens:
                continue
            out.append(QAExample(id=str(qid), context=context, question=q, answer=a))
    if indices is not None:
        out = [out[i] for i in indices if i < len(out)]
    return out[:num] if num else out


def nq_examples(source):
    """(id, question, long answer text, short answer text) from NQ jsonl in either official format."""
    with _open(source) as f:
        for line in f:
            ex = json.loads(line)
            ann = ex["annotations"][0]
            if not ann["short_answers"] or ann["long_answer"]["start_token"] < 0:
                continue
            if "document_tokens" in ex:
                toks = [t["token"] for t in ex["document_tokens"]]
                keep = [not t["html_token"] for t in ex["document_tokens"]]
                clean = lambda s, e: " ".join(t for t, k in zip(toks[s:e], keep[s:e]) if k)
            else:   # simplified format: whitespace tokens of document_text, HTML tags kept as tokens
                toks = ex["document_text"].split(" ")
                clean = lambda s, e: " ".join(t for t in toks[s:e] if not (t.startswith("<") and t.endswith(">")))
            la, sa = ann["long_answer"], ann["short_answers"][0]
            yield (str(ex.get("example_id", "")), ex["question_text"], clean(la["start_token"], la["end_token"]),
                   clean(sa["start_token"], sa["end_token"]))


def load_nq(source, tokenizer=None, max_answer_tokens: int = 4, num: int | None = None,
            indices=None) -> list[QAExample]:
    out = [QAExample(id=i, context=c, question=q + "?", answer=a) for i, q, c, a in nq_examples(source)
           if a and _n_tokens(tokenizer, a) <= max_answer_tokens]
    if indices is not None:
        out = [out[i] for i in indices if i < len(out)]
    return out[:num] if num else out


def authors_indices(path) -> list[int] | None:
    """The authors' sample selection (`indices_squad_3.npy`, `indices_nq_4.npy`: positions in the filtered list)
    when the file exists, else None. Read without pickle."""
    path = Path(path)
    if not path.is_file():
        return None
    import numpy as np
    idx = np.load(path, allow_pickle=False)
    if idx.ndim != 1 or idx.dtype.kind not in "iu" or (idx < 0).any():
        raise ValueError(f"{path}: expected a 1-D array of non-negative integer positions, got {idx.dtype} {idx.shape}")
    return [int(i) for i in idx]


def unrelated_contexts(paragraphs, tokenizer, n: int, join_until: int = 768, cut: int = 512) -> list[str]:
    """The authors' unrelated contexts: join consecutive paragraphs until >= join_until tokens, cut to `cut`."""
    out, buf = [], []
    for p in paragraphs:
        buf.append(p)
        text = " ".join(buf)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) >= join_until:
            out.append(tokenizer.decode(ids[:cut]))
            buf = []
            if len(out) >= n:
                break
    return out


def write_squad_json(examples, path, title="memoryllm-repro"):
    """Write QAExamples as a SQuAD v2 JSON file (used for the bundled held-out set)."""
    data = {"version": "v2.0", "data": [{"title": title, "paragraphs": [
        {"context": e.context, "qas": [{"id": e.id, "question": e.question, "is_impossible": False,
                                         "answers": [{"text": e.answer,
                                                      "answer_start": e.context.find(e.answer)}]}]}
        for e in examples]}]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1))
