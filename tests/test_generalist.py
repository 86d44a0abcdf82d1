"""The generalist training generator (data/generalist.py) and the hand-written natural-fact set."""
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from memoryllm_repro import load_tokenizer
from memoryllm_repro.data import generalist as G
from memoryllm_repro.data.natural_facts import load_natural_facts
from memoryllm_repro.data.world import World, split_of
from memoryllm_repro.paths import EDITING_DIR


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def gen(tok):
    return G.GeneralistSamples(tok, seed=0)


@pytest.fixture(scope="module")
def many(gen):
    """A few thousand samples over the whole curriculum range, decoded once for the checks below."""
    out = []
    for i in range(2500):
        k = 1 + (i * 7) % 20 if i % 5 == 0 else random.Random(i).randint(1, 4)
        s = gen.sample(i, k)
        out.append((k, s, [gen.tok.decode(c) for c in s["contexts"]], gen.tok.decode(s["target"])))
    return out


def test_deterministic_and_seeded(tok, gen):
    again = G.GeneralistSamples(tok, seed=0)
    other = G.GeneralistSamples(tok, seed=1)
    for i, k in [(0, 1), (7, 3), (123, 12), (999, 20)]:
        a, b = gen.sample(i, k), again.sample(i, k)
        assert a == b
        assert gen.sample(i, k) == a            # no hidden state carried between calls
    differ = sum(gen.sample(i, 2) != other.sample(i, 2) for i in range(20))
    assert differ >= 18
    assert gen.regularizer(5) == again.regularizer(5) and len(gen.regularizer(5)) > 16


def test_interface_and_lengths(many):
    kinds = Counter()
    lengths = []
    for k, s, _, _ in many:
        assert set(s) >= {"contexts", "target", "kind"}
        assert len(s["contexts"]) == k
        assert all(isinstance(t, int) for c in s["contexts"] for t in c)
        assert len(s["target"]) >= 2
        lengths += [len(c) for c in s["contexts"]]
        kinds[s["kind"].split("-")[0]] += 1
    assert min(lengths) >= 16 and max(lengths) <= 512
    assert sum(n <= 32 for n in lengths) > 0.05 * len(lengths)      # short (edit-like) writes are common
    assert sum(n >= 300 for n in lengths) > 0.03 * len(lengths)     # and long multi-passage ones too
    assert set(kinds) == {"facts", "edit", "document", "generic"}


def test_prompt_styles_and_phrasings(many):
    styles = Counter(s["kind"].rsplit("-", 1)[-1] for _, s, _, _ in many)
    assert styles["qa"] > 200 and styles["chat"] > 200
    for _, s, _, target in many:
        if s["kind"].endswith("-chat"):
            assert "<|im_start|>user" in target and "<|im_start|>assistant" in target
        elif s["kind"].endswith("-qa"):
            assert target.startswith(("Question:", "Q:"))
    # several wordings of one relation's question
    where = {re.sub(r"[A-Z][\w.'-]*( [A-Z][\w.'-]*)*", "X", q) for _, s, _, t in many
             for q in re.findall(r"(Where does [^?]*live\?|In which town does [^?]* live\?|"
                                 r"What town does [^?]* call home\?)", t)}
    assert len(where) >= 3


def test_every_answer_is_in_a_context(many):
    asked = 0
    for _, s, contexts, target in many:
        for a in s["answers"]:
            asked += 1
            assert any(a in c for c in contexts), (s["kind"], a)
            assert a in target
    assert asked > 2000


def test_answer_mask_marks_the_answers(many):
    """Question targets mark their answer tokens (TrainConfig.answer_weight): the marked tokens decode to the
    answers in order, the question and template are not marked, and plain continuation has no mask."""
    masked = marked = tokens = 0
    for _, s, _, target in many:
        if s["kind"] == "generic" or s.get("answer_mask") is None:
            assert s["kind"] == "generic" or s["kind"].startswith("document")   # a next-chunk target
            continue
        masked += 1
        m = s["answer_mask"]
        assert len(m) == len(s["target"]) and set(m) <= {0, 1}
        assert 0 < sum(m) < len(m)
        marked, tokens = marked + sum(m), tokens + len(m)
    assert masked > 1500
    assert 0.05 < marked / tokens < 0.4      # most of a target is template and question


def test_answer_mask_decodes_to_the_answers(tok, gen):
    checked = 0
    for i in range(60):
        s = gen.sample(i, 2)
        if s.get("answer_mask") is None:
            continue
        checked += 1
        spans, cur = [], []
        for t, x in zip(s["target"], s["answer_mask"]):
            if x:
                cur.append(t)
            elif cur:
                spans.append(tok.decode(cur).strip())
                cur = []
        if cur:
            spans.append(tok.decode(cur).strip())
        assert len(spans) == len(s["answers"])
        for span, value in zip(spans, s["answers"]):
            assert value in span           # the value itself, or the sentence answer holding it
        assert "Question" not in " ".join(spans) and "<|im_start|>" not in " ".join(spans)
    assert checked >= 30
    # an answer the template rewrote (not found after its question): no mask, the same ids
    text = "Question: Where? Answer: in Oslo"
    assert gen._answer_mask(text, [("Where?", "Bergen")]) == (gen.encode(text), None)
    ids, mask = gen._answer_mask(text, [("Where?", "Oslo")])
    assert ids == gen.encode(text) and tok.decode([t for t, x in zip(ids, mask) if x]).strip() == "Oslo"


def test_small_numbers_in_words_and_digits(many):
    """Counts and ages are written as digits or in words, and the answer keeps the form the context used."""
    from num2words import num2words
    words = {num2words(i) for i in range(2, 100)}
    in_words = [a for _, s, _, _ in many for a in s["answers"] if a in words]
    in_digits = [a for _, s, _, _ in many for a in s["answers"] if a.isdigit() and len(a) <= 2]
    assert len(in_words) > 50 and len(in_digits) > 50
    for _, s, contexts, _ in many:
        for a in s["answers"]:
            if a in words:
                assert any(a in c for c in contexts)


def test_questions_reach_far_back(many):
    """With k >= 10, the earliest context is asked about often: distance is what the loss trains."""
    first = n = 0
    for k, s, contexts, _ in many:
        if k >= 10 and s["kind"].startswith("facts") and s["answers"]:
            n += 1
            first += any(a in contexts[0] for a in s["answers"])
    assert n > 30 and first / n > 0.4


def _eval_names():
    names = {e for r in load_natural_facts("all") for e in r["entities"]}
    names |= {r["requested_rewrite"]["subject"] for r in json.loads((EDITING_DIR / "counterfact_bundled.json")
                                                                     .read_text())}
    names |= {r["subject"] for r in json.loads((EDITING_DIR / "zsre_bundled.json").read_text())}
    return {n[4:] if n.startswith("the ") else n for n in names}


def test_no_evaluation_entity_in_training(many):
    # an independent check (regex on the decoded text) of the names of the natural set and the editing sets
    pattern = re.compile(r"(?<![\w'-])(" + "|".join(sorted(map(re.escape, _eval_names()), key=len, reverse=True))
                         + r")(?![\w'-])")
    heldout = World(seed=0, split="heldout")
    world_names = {p.name for p in heldout.people} | {t.name for t in heldout.towns}
    for _, s, contexts, target in many:
        text = "\n".join(contexts + [target])
        m = pattern.search(text)
        assert m is None, (m.group(0), s["kind"])
        assert not any(n in text for n in world_names if len(n) > 8)
    # the generator's own (word n-gram) filter knows those names too
    assert {"Odile Brask", "Varnholm", "Paris", "Eiffel Tower"} <= G.eval_entity_strings()
    assert G.banned_in("We met Odile Brask near Paris.") == ["Paris", "Odile Brask"]


def test_entities_follow_the_split(tok, gen):
    rng = random.Random(0)
    names = [gen._entity(rng)["name"] for _ in range(300)]
    assert all(split_of(n) == "train" for n in names)
    held = G.GeneralistSamples(tok, split="heldout")
    rng = random.Random(0)
    assert all(split_of(held._entity(rng)["name"]) == "heldout" for _ in range(50))
    qa = held.qa_examples(10)
    assert len(qa) == 10 and all(q["answer"] in q["context"] for q in qa)


def test_generic_text_split(tok, gen):
    from memoryllm_repro.data.corpus import GENERIC_HOLDOUT, generic_texts
    texts = generic_texts()
    assert gen.generic_heldout == texts[-GENERIC_HOLDOUT:]
    assert not set(gen.generic) & set(gen.generic_heldout)
    assert all(not G.banned_in(t) for t in gen.generic)


def test_bad_input(tok, gen):
    with pytest.raises(ValueError):
        gen.sample(0, 0)
    with pytest.raises(ValueError):
        G.GeneralistSamples(tok, split="test")
    with pytest.raises(ValueError):
        G.GeneralistSamples(tok, mix={"min_write": 8})
    with pytest.raises(ValueError):
        G.GeneralistSamples(tok, mix={"facts": -1.0})
    with pytest.raises(TypeError):
        G.GeneralistSamples(tok, mix={"no_such_weight": 1.0})
    with pytest.raises(ValueError):
        G.GeneralistSamples(tok, mix={"kl_tokens": 8})
    with pytest.raises(ValueError):
        G.GeneralistSamples(tok, mix={"p_invented": 1.5})


def test_invented_names(tok, gen, monkeypatch):
    """p_invented: names become invented syllables (world.py's style) in that share of samples; the rest, and every
    sample of a run without it, are unchanged; the split and the evaluation-name filter still hold."""
    inv = G.GeneralistSamples(tok, seed=0, mix={"p_invented": 1.0})
    half = G.GeneralistSamples(tok, seed=0, mix={"p_invented": 0.5})
    zero = G.GeneralistSamples(tok, seed=0, mix={"p_invented": 0.0})
    assert all(zero.sample(i, 3) == gen.sample(i, 3) for i in range(20))
    assert inv.sample(4, 3) == G.GeneralistSamples(tok, seed=0, mix={"p_invented": 1.0}).sample(4, 3)
    rng = random.Random(0)
    inv._fake = G.InventedNames(inv._faker, rng)
    people = [inv._entity(rng, "person") for _ in range(100)]
    assert all(split_of(p["name"]) == "train" and not G.banned_in(p["name"]) for p in people)
    # invented names are not Faker's: none of Faker's en_US first names among them (a few collisions allowed)
    from faker import Faker
    faker_firsts = {Faker("en_US").first_name() for _ in range(3000)}
    assert sum(p["first"] in faker_firsts for p in people) <= 5
    assert inv.sample(4, 3) != gen.sample(4, 3)
    made, real = [], G.InventedNames

    def counting(fake, r):
        made.append(1)
        return real(fake, r)
    monkeypatch.setattr(G, "InventedNames", counting)
    for i in range(200):
        half.sample(i, 2)
    assert 70 <= len(made) <= 140              # about half of the samples (a retried sample draws again)
    monkeypatch.undo()
    heldout = World(seed=0, split="heldout")
    world_names = {p.name for p in heldout.people} | {t.name for t in heldout.towns}
    for i in range(150):
        s = inv.sample(i, 1 + i % 5)
        text = "\n".join(tok.decode(c) for c in s["contexts"] + [s["target"]])
        assert not G.banned_in(text) and not any(n in text for n in world_names if len(n) > 8)
    assert inv.qa_examples(3) == G.GeneralistSamples(tok, seed=0).qa_examples(3)   # generator-format eval unchanged


def test_distillation_text_from_the_document_start(tok, gen):
    """kl_tokens = N distils on a generic document's first N tokens (positions past 128 included); the default keeps
    the recorded run's 64-128-token pieces."""
    long = G.GeneralistSamples(tok, seed=0, mix={"kl_tokens": 256})
    pieces, docs = [gen.regularizer(i) for i in range(30)], [long.regularizer(i) for i in range(30)]
    assert max(map(len, pieces)) <= 128 < max(map(len, docs)) <= 256
    starts = {tuple(long.encode(t)[:16]) for t in long.generic}
    assert all(tuple(d[:16]) in starts for d in docs)          # each one is the start of a training document
    assert docs == [long.regularizer(i) for i in range(30)]


def test_natural_facts_set():
    dev, test, all_ = load_natural_facts("dev"), load_natural_facts("test"), load_natural_facts("all")
    assert len(dev) == len(test) == 40 and dev + test == all_
    assert not {r["id"] for r in dev} & {r["id"] for r in test}
    for r in all_:
        assert r["answer"] in r["context"] and r["question"].endswith("?") and r["entities"]
    with pytest.raises(ValueError):
        load_natural_facts("train")


def test_faker_is_a_requirement():
    req = (Path(__file__).parents[1] / "requirements.txt").read_text()
    assert re.search(r"^faker(==|>=)\d", req, re.M | re.I)     # pinned: its output changes across versions


def test_world_rehearsal(tok, gen):
    """mix.world draws the first default checkpoint's format (world.py paragraphs of the train split, Question/Answer
    lines); every answer is in a context; a run without it gets the samples it always got."""
    w = G.GeneralistSamples(tok, seed=0, mix={"world": 1.0, "facts": 0.0, "edit": 0.0, "document": 0.0,
                                             "generic": 0.0})
    assert all(G.GeneralistSamples(tok, seed=0, mix={"world": 0.0}).sample(i, 2) == gen.sample(i, 2)
               for i in range(10))
    train_names = {p.name for p in World(seed=0, split="train").people} | {t.name for t in World(seed=0).towns}
    named = 0
    for i in range(30):
        s = w.sample(i, 1 + i % 6)
        contexts = [tok.decode(c) for c in s["contexts"]]
        assert s["kind"] == "world-qa" and len(contexts) == 1 + i % 6 and s["answers"]
        assert tok.decode(s["target"]).startswith("Question:")
        assert all(any(a in c for c in contexts) for a in s["answers"])
        named += any(n in contexts[0] for n in train_names)         # the train split's entities
        assert not G.banned_in("\n".join(contexts))                   # never a held-out entity
    assert named >= 20              # (a paragraph of pronoun-led facts may not name its entity)
    mixed = G.GeneralistSamples(tok, seed=0, mix={"world": 0.2})
    share = sum(mixed.sample(i, 2)["kind"] == "world-qa" for i in range(300)) / 300
    assert 0.08 <= share <= 0.25
