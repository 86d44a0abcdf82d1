"""The bundled held-out retention set: SQuAD-like paragraphs about fictional entities never seen in training.

Each example is a paragraph of 4-6 facts about one held-out person or town, a question about one of them and its
short answer (a name, a year, a job...). Unrelated contexts are paragraphs about *other* held-out entities, two
per context, so they look like the relevant ones (as SQuAD-train paragraphs did for the authors' SQuAD runs).
"""
from __future__ import annotations

import random

from .qa import QAExample
from .world import World, paragraph


def heldout_retention_set(n_examples: int = 100, n_distractors: int = 30, seed: int = 0):
    world = World(seed=0, split="heldout")
    rng = random.Random(f"retention-{seed}")
    entities = world.people[:]
    rng.shuffle(entities)
    towns = world.towns[:]
    rng.shuffle(towns)
    n_towns = n_examples // 5
    chosen = entities[:n_examples - n_towns] + towns[:n_towns]
    rng.shuffle(chosen)
    examples = []
    for i, e in enumerate(chosen):
        text, qas = paragraph(e, rng, k=rng.randint(4, 5))
        q, a = rng.choice(qas)
        examples.append(QAExample(id=f"heldout-{seed}-{i}", context=text, question=q, answer=a))
    rest = entities[n_examples:] + towns[n_towns + 50:]
    distractors = []
    for j in range(n_distractors):
        a, b = rng.sample(rest, 2)
        distractors.append("Context: " + paragraph(a, rng, k=4)[0] + " " + paragraph(b, rng, k=4)[0])
    return examples, distractors
