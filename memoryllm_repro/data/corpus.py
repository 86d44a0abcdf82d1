"""Training samples: (contexts x_1..x_{n-1}, target x_n), from any text corpus or the bundled default.

* `chunk_document` is the authors' chunker (github.com/wangyu-ustc/MemoryLLM): random-length chunks in
  [min_len, max_len] tokens; the last chunk is the target, the earlier ones are contexts.
* `load_texts` reads any corpus with `datasets`: local jsonl/json/parquet/txt files or folders, or a hub name such
  as `allenai/c4:en` (config after the colon) for users with the network. The text field is `text` (C4) or
  `raw_content` (RedPajama).
* `DefaultSamples` is the offline default: fact documents about fictional people and towns (training split of
  `world.World`), whose target asks questions answered only by the contexts, mixed with generic English text
  (`data/generic_smollm2.jsonl`). Sample i is a pure function of (seed, i, number of contexts), so a resumed run
  sees exactly the data order it would have seen.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from .world import World, paragraph, qa_block

from ..paths import GENERIC_FILE
GENERIC_HOLDOUT = 40   # the last 40 generic documents: never trained on, used for the perplexity check


def chunk_document(ids: list[int], min_len: int, max_len: int, rng: random.Random) -> list[list[int]]:
    """Cut a token list into chunks of uniform-random length in [min_len, max_len]. Documents shorter than
    1.5 * max_len are split in half; a leftover shorter than min_len is dropped. Chunks under 16 tokens (the
    authors' hard minimum for writes) are never produced: such documents give no chunks."""
    if len(ids) < 1.5 * max_len:
        half = len(ids) // 2
        return [ids[:half], ids[half:]] if half >= 16 else []
    chunks, i = [], 0
    while len(ids) - i >= max_len:
        n = rng.randint(min_len, max_len)
        chunks.append(ids[i:i + n])
        i += n
    if len(ids) - i >= min_len:
        chunks.append(ids[i:])
    return chunks


def load_texts(spec: str, split: str = "train", text_field: str | None = None, limit: int | None = None,
               streaming: bool | None = None) -> list[str]:
    """Texts of a corpus: a local file/folder (jsonl, json, parquet, txt) or a hub dataset `name[:config]`."""
    from datasets import load_dataset
    path = Path(spec)
    if path.exists():
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        ext = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text", ".gz": "json"}
        kinds = {ext.get(p.suffix) for p in files} - {None}
        if len(kinds) != 1:
            raise ValueError(f"{spec}: expected files of one kind (jsonl/json/parquet/txt), found {kinds or 'none'}")
        ds = load_dataset(kinds.pop(), data_files=[str(p) for p in files], split="train",
                          streaming=bool(streaming))
    else:
        name, _, config = spec.partition(":")
        ds = load_dataset(name, config or None, split=split, streaming=True if streaming is None else streaming)
    field = text_field
    out = []
    for row in ds:
        if field is None:
            field = next((f for f in ("text", "raw_content", "content") if f in row), None)
            if field is None:
                raise ValueError(f"{spec}: no text field among {list(row)}; pass text_field")
        out.append(row[field])
        if limit is not None and len(out) >= limit:
            break
    return out


def generic_texts(path: Path = GENERIC_FILE) -> list[str]:
    return [json.loads(line)["text"] for line in path.open() if line.strip()]


class DefaultSamples:
    """The bundled offline training distribution (see module docstring)."""

    def __init__(self, tokenizer, seed: int = 0, min_len: int = 64, max_len: int = 128, p_generic: float = 0.3,
                 texts: list[str] | None = None, generic_holdout: int = GENERIC_HOLDOUT):
        self.tok, self.seed, self.min_len, self.max_len, self.p_generic = tokenizer, seed, min_len, max_len, p_generic
        self.world = World(seed=0, split="train")
        texts = generic_texts() if texts is None else texts
        # the last `generic_holdout` generic documents are kept for the no-regression perplexity check
        self.generic = texts[:-generic_holdout] if generic_holdout else texts
        self.generic_heldout = texts[-generic_holdout:] if generic_holdout else []

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    def sample(self, index: int, num_contexts: int) -> dict:
        """Sample `index` with up to `num_contexts` contexts: {"contexts": [ids...], "target": ids, "kind"}."""
        rng = random.Random(f"{self.seed}-{index}")
        if self.generic and rng.random() < self.p_generic:
            return self._generic(rng, num_contexts)
        return self._facts(rng, num_contexts)

    def regularizer(self, index: int) -> list[int]:
        """A chunk of training generic text for the distillation term (TrainConfig.kl_weight)."""
        rng = random.Random(f"{self.seed}-kl-{index}")
        if not self.generic:
            raise ValueError("the distillation term needs generic text (p_generic > 0 and generic documents)")
        ids = self.encode(rng.choice(self.generic))
        return rng.choice(chunk_document(ids, self.min_len, self.max_len, rng) or [ids[:self.max_len]])

    def _generic(self, rng, k):
        for _ in range(20):
            chunks = chunk_document(self.encode(rng.choice(self.generic)), self.min_len, self.max_len, rng)
            if len(chunks) >= 2:
                chunks = chunks[-(k + 1):]
                return {"contexts": chunks[:-1], "target": chunks[-1], "kind": "generic"}
        return self._facts(rng, k)

    def _entity(self, rng):
        return rng.choice(self.world.people) if rng.random() < 0.75 else rng.choice(self.world.towns)

    def _facts(self, rng, k):
        """k paragraphs about k distinct entities (a person is sometimes followed by their home town), then a
        block of questions whose answers are in those paragraphs, the first paragraph included when k > 1."""
        entities = [self._entity(rng)]
        while len(entities) < k:
            last = entities[-1]
            if hasattr(last, "town") and rng.random() < 0.3:
                town = next((t for t in self.world.towns if t.name == last.town), None)
                if town is not None and town not in entities:
                    entities.append(town)
                    continue
            e = self._entity(rng)
            if e not in entities:
                entities.append(e)
        contexts, pool = [], []
        for e in entities:
            text, qas = paragraph(e, rng, prefix="Context: " if rng.random() < 0.7 else "")
            contexts.append(self.encode(text))
            pool.append(qas)
        n_q = rng.randint(2, 4)
        questions = [rng.choice(pool[0])] if k > 1 else []
        flat = [qa for qas in pool for qa in qas if qa not in questions]
        questions += rng.sample(flat, min(n_q - len(questions), len(flat)))
        rng.shuffle(questions)
        return {"contexts": contexts, "target": self.encode(qa_block(questions, rng)), "kind": f"facts{k}",
                "answers": [a for _, a in questions]}


def warmup_contexts(tokenizer, num_writes: int, seed: int = 0, min_len: int = 64, max_len: int = 128,
                    source: str = "generic") -> list[list[int]]:
    """The contexts a checkpoint's warm-up recipe writes: chunks of the training part of the bundled generic
    text (never the held-out documents used for the perplexity check), chosen by `seed`."""
    if source != "generic":
        raise ValueError(f"unknown warm-up source {source!r}")
    texts = generic_texts()[:-GENERIC_HOLDOUT]
    rng = random.Random(f"warmup-{seed}")
    out = []
    while len(out) < num_writes:
        chunks = chunk_document(tokenizer(rng.choice(texts), add_special_tokens=False).input_ids, min_len,
                                max_len, rng)
        out += chunks[: num_writes - len(out)]
    return out
