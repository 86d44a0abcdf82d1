"""Figure 5 harness: data loaders on fixtures in the authors' formats, the hit metric, Eq. 5, isolation."""
from pathlib import Path

import pytest
import torch

from memoryllm_repro import MemoryLLM, expected_retention, load_tokenizer, theoretical_accuracy
from memoryllm_repro.data import qa_datasets as qa
from memoryllm_repro.data.qa import QAExample
from memoryllm_repro.data.retention_set import heldout_retention_set
from memoryllm_repro.data.world import World
from memoryllm_repro.eval.retention import hit, run_retention, summarize, wilson

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


def test_squad_loader_filters(tok):
    ex = qa.load_squad(FIX / "squad_v2_mini.json", tok, max_answer_tokens=3)
    assert [(e.id, e.answer) for e in ex] == [("q1", "France"), ("q4", "Rollo")]   # impossible + long dropped
    assert ex[0].context.startswith("The Normans") and ex[1].question == "Who was the first Norman ruler?"
    assert [e.id for e in qa.load_squad(FIX / "squad_v2_mini.json", tok, indices=[1])] == ["q4"]


def test_nq_loaders_both_formats(tok):
    dev = qa.load_nq(FIX / "nq_dev_mini.jsonl", tok, max_answer_tokens=4)
    assert len(dev) == 1                                    # the example without a short answer is dropped
    assert dev[0].answer == "Paris" and dev[0].question == "where is the eiffel tower?"
    assert dev[0].context == "The Eiffel Tower is in Paris , France ."   # HTML tokens removed
    simp = list(qa.nq_examples(FIX / "nq_simplified_mini.jsonl"))
    assert simp[0][3] == "Paris , France" and simp[0][2] == dev[0].context


def test_unrelated_contexts_join_and_cut(tok):
    paras = ["word " * 300, "more " * 300, "text " * 300, "last " * 900]
    out = qa.unrelated_contexts(iter(paras), tok, n=2, join_until=500, cut=100)
    assert len(out) == 2
    assert all(len(tok(o, add_special_tokens=False).input_ids) <= 101 for o in out)
    assert "more" not in out[0] and out[0].startswith("word")   # first chunk: paragraphs 1+2 reach 500 tokens


def test_bundled_set_is_held_out_and_round_trips(tmp_path, tok):
    examples, distractors = heldout_retention_set(20, 5, seed=0)
    train_names = {p.name for p in World(0, "train").people} | {t.name for t in World(0, "train").towns}
    for e in examples:
        assert e.answer in e.context
        assert not any(name in e.context for name in train_names if len(name) > 6)
    assert len(distractors) == 5 and len({e.id for e in examples}) == 20
    qa.write_squad_json(examples, tmp_path / "heldout.json")
    back = qa.load_squad(tmp_path / "heldout.json", None, max_answer_tokens=10)
    assert [(b.question, b.answer) for b in back] == [(e.question, e.answer) for e in examples]


def test_hit_metric():
    assert hit(" Paris, the capital", "Paris")
    assert hit("It is Paris.", " Paris </s>")               # the authors strip </s> and whitespace
    assert not hit(" paris", "Paris")                        # case-sensitive substring, as the authors
    assert not hit(" Pa ris", "Paris") and not hit("anything", "")


def test_theoretical_curve_hand_values():
    assert theoretical_accuracy(1, 0.6, 0.1, 1920, 64) == pytest.approx(0.6)
    assert theoretical_accuracy(2, 0.6, 0.1, 1920, 64) == pytest.approx(0.1 + 0.5 * 29 / 30)
    assert theoretical_accuracy(11, 0.5, 0.0, 7680, 256) == pytest.approx(0.5 * (29 / 30) ** 10)
    assert expected_retention(10, 7680, 256) == pytest.approx(0.7125, abs=1e-4)   # paper: 0.71 after 10
    assert expected_retention(30, 7680, 256) == pytest.approx(0.3617, abs=1e-4)   # Eq. 3 with N/K = 30
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)


def test_restoring_memory_isolates_examples(tok):
    model = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    examples, distractors = heldout_retention_set(3, 4, seed=0)
    model.inject_memory(tok("Context: a warm pool before the evaluation starts, long enough to write.",
                            return_tensors="pt").input_ids)
    pool, gen = model.memory.clone(), model.generator.get_state()
    both = run_retention(model, tok, examples[:2], distractors, 2, progress=False)
    assert torch.equal(model.memory, pool) and torch.equal(model.generator.get_state(), gen)
    alone = run_retention(model, tok, examples[1:2], distractors, 2, progress=False)
    assert [r["pred"] for r in both if r["id"] == examples[1].id] == [r["pred"] for r in alone]
    carried = run_retention(model, tok, examples[:2], distractors, 2, carry_over=True, progress=False)
    assert not torch.equal(model.memory, pool)              # the authors' default: the pool keeps everything
    steps = [r["step"] for r in carried if r["condition"] == "memory" and r["id"] == examples[0].id]
    assert steps == [1, 2, 3]
    s = summarize(__import__("pandas").DataFrame([{"dataset": "d", **r} for r in both]))
    assert set(s.condition) == {"memory", "borderline"} and (s.n == 2).all()


def test_batched_memories_match_one_by_one(tok):
    """batch_size=B runs B examples in B independent copies of the pool. With the random drops made deterministic
    (FIFO), every prediction equals the one-example-at-a-time run, and the pool is restored afterwards."""
    model = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    N, K, L = model.N, model.K, model.L
    model.draw_survivors = lambda B: torch.arange(K, N).expand(B, L, -1)
    examples, distractors = heldout_retention_set(5, 4, seed=0)
    model.inject_memory(tok("Context: a warm pool before the evaluation starts, long enough to write.",
                            return_tensors="pt").input_ids)
    pool = model.memory.clone()
    one = run_retention(model, tok, examples, distractors, 3, progress=False, in_prompt=True)
    many = run_retention(model, tok, examples, distractors, 3, progress=False, in_prompt=True, batch_size=3)
    key = lambda r: (r["id"], r["condition"], r["step"])
    assert sorted(map(key, one)) == sorted(map(key, many))
    assert {key(r): r["pred"] for r in one} == {key(r): r["pred"] for r in many}
    assert torch.equal(model.memory, pool) and model.num_memories == 1
    model.reset_memory()   # an empty pool: every copy's first write tiles
    one = run_retention(model, tok, examples[:3], distractors, 2, progress=False)
    many = run_retention(model, tok, examples[:3], distractors, 2, progress=False, batch_size=3)
    assert {key(r): r["pred"] for r in one} == {key(r): r["pred"] for r in many}
    assert not model.initialized and model.num_memories == 1
    with pytest.raises(ValueError, match="carry_over"):
        run_retention(model, tok, examples, distractors, 1, carry_over=True, batch_size=2, progress=False)
