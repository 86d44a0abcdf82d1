"""The held-out natural-sentence fact set: 80 short facts about invented people, places and things, written by hand.

It is deliberately *not* made by any generator of this package: free-form sentences ("The lighthouse keeper on
Varnholm island, Odile Brask, paints her door yellow every spring."), vocabulary and relations that the training
generator (`data/generalist.py`) does not use, names outside Faker's default lists where possible. A model that only
learned the generator's templates fails here. Never train on it: every name in its `entities` field is excluded
from training samples (`generalist.eval_entity_strings`, enforced by tests/test_generalist.py).

Split: the first 40 records are `dev` (diagnosis, validation during training), the last 40 are `test` (final
reporting only; never tune on them).
"""
from __future__ import annotations

import json

from ..paths import RESOURCES

NATURAL_FACTS_FILE = RESOURCES / "eval" / "natural_facts.jsonl"
SPLITS = ("dev", "test", "all")


def load_natural_facts(split: str = "dev") -> list[dict]:
    """Records {"id", "context", "question", "answer", "entities"} of one split ("dev", "test" or "all")."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rows = [json.loads(line) for line in NATURAL_FACTS_FILE.read_text().splitlines() if line.strip()]
    for r in rows:
        if r["answer"] not in r["context"]:
            raise ValueError(f"{NATURAL_FACTS_FILE}: answer of {r['id']} is not in its context")
    half = len(rows) // 2
    return rows if split == "all" else rows[:half] if split == "dev" else rows[half:]

