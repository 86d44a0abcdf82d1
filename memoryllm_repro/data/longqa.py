"""The bundled long-context QA set, in LongBench's jsonl format (input, context, answers, length, dataset,
language, all_classes, _id), about held-out entities only.

Each context is a list of passages ("Passage i:\\n<title>\\n<text>", as LongBench's hotpotqa) about held-out
people and towns plus held-out generic text, grown to a target number of tokens, with the evidence at a random
depth. Two kinds: `bundled_single` (one passage holds the answer; asked with the multifieldqa_en prompt) and
`bundled_twohop` (a person's passage gives their birth town, the town's passage gives its country; asked
"In which country is the town where X was born?" with the hotpotqa prompt, like hotpotqa's bridge questions).
"""
from __future__ import annotations

import random

from .corpus import GENERIC_HOLDOUT, generic_texts
from .world import World, paragraph

TEMPLATE = {"bundled_single": "multifieldqa_en", "bundled_twohop": "hotpotqa"}


def _passages(world, rng, exclude):
    generic = generic_texts()[-GENERIC_HOLDOUT:]
    while True:
        if rng.random() < 0.25:
            text = rng.choice(generic)
            yield text.split("\n")[0][:60], text
        else:
            e = rng.choice(world.people) if rng.random() < 0.7 else rng.choice(world.towns)
            if e.name not in exclude:
                yield e.name, paragraph(e, rng)[0]


def bundled_longqa(tok, kind: str, n: int, context_tokens: int, seed: int = 0) -> list[dict]:
    world = World(0, "heldout")
    towns = {t.name: t for t in world.towns}
    rng = random.Random(f"longqa-{kind}-{context_tokens}-{seed}")
    out = []
    while len(out) < n:
        p = rng.choice(world.people)
        if kind == "bundled_single":
            facts = p.facts()
            statement, questions, answer = rng.choice(facts)
            evidence = [(p.name, " ".join(s for s, _, _ in rng.sample(facts, 4) if s != statement) + " " + statement)]
            question, answer = rng.choice(questions), answer[0]
        elif kind == "bundled_twohop":
            t = towns.get(p.town)
            if t is None:
                continue
            evidence = [(p.name, f"{p.name} was born in {t.name}. " + paragraph(p, rng, k=3)[0]),
                        (t.name, f"{t.name} is a town in the country of {t.country}. " + paragraph(t, rng, k=2)[0])]
            question, answer = f"In which country is the town where {p.name} was born?", t.country
        else:
            raise ValueError(f"unknown kind {kind!r}")
        exclude = {p.name, p.town}
        passages, total = [], 0
        for title, text in _passages(world, rng, exclude):
            passages.append((title, text))
            total += len(tok(text, add_special_tokens=False).input_ids) + 8
            if total >= context_tokens:
                break
        for ev in evidence:                        # evidence at random depths
            passages.insert(rng.randint(0, len(passages)), ev)
        context = "\n".join(f"Passage {i + 1}:\n{title}\n{text}" for i, (title, text) in enumerate(passages))
        out.append({"input": question, "context": context, "answers": [answer], "length": len(context.split()),
                    "dataset": kind, "language": "en", "all_classes": None,
                    "_id": f"{kind}-{context_tokens}-{seed}-{len(out)}"})
    return out
