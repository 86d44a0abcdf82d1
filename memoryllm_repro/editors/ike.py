"""IKE (Zheng et al., 2023): in-context editing. The prompt starts with demonstrations built from *other*
records - copy ("New Fact: s r o*. Prompt: s r o*"), update (a paraphrase answered with o*) and retain (a
neighbor answered with its true object) - then "New Fact: <the edit>\\nPrompt: " before each query."""
from __future__ import annotations

import contextlib
import random

from .common import edit_text


class IKE:
    def __init__(self, demos: list[dict], k: int = 6, seed: int = 0):
        self.demos, self.k, self.seed = demos, k, seed
        self.scoring = {"use_memory": False}
        self.prefix = ""

    def _demo(self, r, kind):
        prompt, new = edit_text(r)
        fact = f"New Fact: {prompt} {new}\n"
        if kind == "update" and r.get("paraphrase_prompts"):
            return fact + f"Prompt: {r['paraphrase_prompts'][0]} {new}\n\n"
        if kind == "retain" and r.get("neighborhood_prompts"):
            return fact + f"Prompt: {r['neighborhood_prompts'][0]} {r['requested_rewrite']['target_true']['str']}\n\n"
        return fact + f"Prompt: {prompt} {new}\n\n"

    @contextlib.contextmanager
    def __call__(self, model, tok, record):
        rng = random.Random(f"{self.seed}-{id(record) if 'case_id' not in record else record['case_id']}")
        pool = [d for d in self.demos if d is not record]
        demos = rng.sample(pool, min(self.k, len(pool)))
        kinds = ["copy", "update", "retain"]
        prompt, new = edit_text(record)
        self.prefix = "".join(self._demo(d, kinds[i % 3]) for i, d in enumerate(demos))
        self.prefix += f"New Fact: {prompt} {new}\nPrompt: "
        try:
            yield
        finally:
            self.prefix = ""
