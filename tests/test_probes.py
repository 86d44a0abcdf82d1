"""Diagnostic probes (eval/probes.py) on the tiny random model: table shape, pool restored, bad input."""
import random

import pytest
import torch

from memoryllm_repro import MemoryLLM, load_tokenizer
from memoryllm_repro.data.corpus import GENERIC_HOLDOUT, generic_texts
from memoryllm_repro.eval import probes


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def model(tok):
    m = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    m.inject_memory(tok("A warm pool before the probes start: one sentence, long enough to be written into memory.",
                        return_tensors="pt").input_ids)
    return m.eval()


def test_probe_table_shape_and_pool_restored(model, tok):
    pool, gen = model.memory.clone(), model.generator.get_state()
    df = probes.run_probes(model, tok, "quick", n=3, progress=False)
    assert list(df.columns) == ["probe", "setting", "n", "accuracy", "answer_nll", "write_tokens"]
    assert (df.answer_nll > 0).all() and df.answer_nll.notna().all()
    q = probes.PRESETS["quick"]
    expected = (len(q["forms"]) + len(q["distances"]) + 2 + (len(q["lengths"]) + 1) + len(q["prompts"])
                + len(q["positions"]) + len(q["references"]))
    assert len(df) == expected
    assert set(df.probe) == {"form", "distance", "borderline", "length", "prompt", "reference"}   # no position
    assert set(df[df.probe == "reference"].setting) == {"in prompt: model", "in prompt: backbone"}
    assert (df.n == 3).all() and df.accuracy.between(0, 1).all()
    lengths = df[df.probe == "length"].set_index("setting").write_tokens
    assert lengths["fact only"] < 60 and 470 <= lengths["512"] <= 525
    assert torch.equal(model.memory, pool) and model.num_memories == 1
    assert torch.equal(model.generator.get_state(), gen)


def test_full_preset_cells(model, tok):
    pool = model.memory.clone()
    df = probes.run_probes(model, tok, "full", n=2, progress=False, lengths=(64, 512), distances=(0, 2),
                           positions=("middle",), causes=(2,))
    assert set(df[df.probe == "cause"].setting) == {"+2 writes: drops", "+2 writes: shift",
                                                    "+2 writes: drops + shift", "+2 real writes"}
    assert torch.equal(model.memory, pool)
    forms = set(df[df.probe == "form"].setting)
    assert forms == {"natural", "context_prefix", "templates", "world"}
    assert set(df[df.probe == "prompt"].setting) == {"qa", "chat", "bare"}
    assert set(df[df.probe == "distance"].setting) == {"+0 writes", "+2 writes"}
    assert set(df[df.probe == "position"].setting) == {"middle of 512"}


def test_a_perfect_reader_scores_one(tok):
    """The hit rule and bookkeeping are right: a fake model whose 'generation' copies the answer it was told
    scores 1 in every written cell and 0 in the borderline."""
    cell = probes._cell
    items = [dict(write="The gate code of the old north gate of Brumholt is 4471.", question="What is the gate code of Brumholt?",
                  answer="4471")]
    written = []          # the fake answers() knows the fact once anything was written

    def fake_answers(model, tok, prompts, n):
        return [" 4471" if written else " no idea" for _ in prompts]

    m = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    orig_inject = m.inject_memory

    def inject(ids, **kw):
        written.append(ids)
        return orig_inject(ids, **kw)
    m.inject_memory = inject
    saved = probes.answers
    probes.answers = fake_answers
    try:
        assert cell(m, tok, items, "qa", (0,), [], write=False)[-1]["hits"] == [False]
        out = cell(m, tok, items, "qa", (0, 2), [tok("x " * 20, return_tensors="pt").input_ids])
        assert {k: v["hits"] for k, v in out.items()} == {0: [True], 2: [True]}
        assert all(len(v["nll"]) == 1 for v in out.values())
    finally:
        probes.answers = saved


def test_reference_reads_the_fact_from_the_prompt(model, tok, monkeypatch):
    """The ceiling cell puts the write before the question, turns the memory off, and for the backbone the LoRA."""
    import contextlib
    seen, disabled = [], []

    def fake_answers(model_, tok_, prompts, n, use_memory=True):
        seen.append((prompts, use_memory, bool(disabled)))
        return [" 4471" if "4471" in p else " no idea" for p in prompts]

    @contextlib.contextmanager
    def fake_base_only(model_):
        disabled.append(1)
        yield
        disabled.pop()
    monkeypatch.setattr(probes, "answers", fake_answers)
    monkeypatch.setattr(probes, "base_only", fake_base_only)
    items = [dict(write="The gate code of Brumholt is 4471.", question="What is the gate code of Brumholt?",
                  answer="4471")]
    pool = model.memory.clone()
    for backbone in (False, True):
        out = probes._in_prompt(model, tok, items, backbone)
        assert out["hits"] == [True] and len(out["nll"]) == 1 and out["nll"][0] > 0
    assert [s[2] for s in seen] == [False, True]
    assert seen[0][0][0].startswith("The gate code of Brumholt is 4471.\nQuestion: ")
    assert "The gate code of Brumholt is 4471.\nWhat is the gate code" in seen[1][0][0]      # chat template
    assert seen[1][0][0] == probes.prompt_text(tok, items[0]["write"] + "\n" + items[0]["question"], "chat")
    assert all(u is False for (_, u, _) in seen)
    assert torch.equal(model.memory, pool)


def test_filler_lengths_and_positions(tok):
    f = probes.Filler(tok, generic_texts()[-GENERIC_HOLDOUT:])
    rng = random.Random(0)
    fact = "The gate code of the old north gate of Brumholt is 4471."
    for where in ("start", "middle", "end", "random"):
        text = f.around(rng, fact, 512, where)
        n = len(tok(text, add_special_tokens=False).input_ids)
        assert fact in text and 470 <= n <= 530
    assert f.around(rng, fact, 512, "start").startswith(fact)
    assert f.around(rng, fact, 512, "end").endswith(fact)


def test_bad_input(model, tok):
    with pytest.raises(ValueError):
        probes.run_probes(model, tok, "slow", progress=False)
    with pytest.raises(ValueError):
        probes.run_probes(model, tok, "quick", n=41, progress=False)
    with pytest.raises(ValueError):
        probes.run_probes(model, tok, "quick", n=2, colour="red", progress=False)
    with pytest.raises(ValueError):
        probes.prompt_text(tok, "Why?", "shout")
    with pytest.raises(ValueError, match="references must be"):
        probes.run_probes(model, tok, "quick", n=1, references=("oracle",), progress=False)
    with pytest.raises(ValueError, match="causes must be in 1..3"):       # N/K = 4: a fact can go 3 writes back
        probes.run_probes(model, tok, "full", n=1, causes=(4,), progress=False)


def test_cli_only(capsys):
    probes.main(["--model", "tiny", "--preset", "full", "--n", "1", "--only", "distance"])
    table = capsys.readouterr().out
    assert "+20 writes" in table and "borderline" in table
    assert "context_prefix" not in table and "chat" not in table and "cause" not in table
    assert "in prompt" not in table
    with pytest.raises(SystemExit):
        probes.main(["--model", "tiny", "--only", "colour"])


def test_pool_as_if_later_changes_one_thing_each():
    B, L, N, K, d, m = 1, 3, 40, 8, 4, 3
    before = torch.arange(B * L * N * d, dtype=torch.float32).reshape(B, L, N, d)
    after = torch.cat([before[:, :, K:], -1 - torch.rand(B, L, K, d)], 2)      # the fact: the last K, negative
    g = torch.Generator().manual_seed(0)
    dropped = probes.pool_as_if_later(after, before, K, m, g, drops=True, shift=False)
    lost = round(K * (1 - (1 - K / N) ** m))                                     # 8 * (1 - 0.8^3) = 3.9 -> 4
    assert lost == 4
    assert torch.equal(dropped[:, :, :N - K], after[:, :, :N - K])               # nothing else moved
    fact_left = (dropped[:, :, N - K:, 0] < 0).sum(-1)
    assert (fact_left == K - lost).all()                                         # per layer, positions kept
    shifted = probes.pool_as_if_later(after, before, K, m, g, drops=False, shift=True)
    assert torch.equal(shifted[:, :, N - K - m * K:N - m * K], after[:, :, N - K:])   # the intact block, m writes back
    assert torch.equal(shifted.sort(2).values, after.sort(2).values)             # the same vectors, reordered


def test_distance_preset(model, tok):
    df = probes.run_probes(model, tok, "distance", n=2, progress=False)
    assert set(zip(df.probe, df.setting)) == {("form", "natural"), ("distance", "+0 writes"),
                                              ("distance", "+10 writes"), ("borderline", "natural"),
                                              ("length", "fact only"), ("prompt", "qa"),
                                              ("reference", "in prompt: model"), ("reference", "in prompt: backbone")}


def test_answer_nll_is_the_answer_tokens_loss(model, tok):
    """answer_nll = HF's labels= loss over the answer tokens only (one prompt), the same for a prompt inside a
    left-padded batch of others, and with a chat prompt (ending in a newline) no space is put before the answer."""
    from memoryllm_repro.eval.retention import answer_nll
    prompts = ["Question: What is the gate code of Brumholt? Answer:", "Question: Who? Answer:",
               probes.prompt_text(tok, "Who?", "chat")]
    golds = ["4471", "Ada Lovelace", "Ada"]
    with torch.no_grad():
        want = []
        for p, g in zip(prompts, golds):
            sep = "" if p.endswith("\n") else " "
            pi, ai = tok(p, add_special_tokens=False).input_ids, tok(sep + g, add_special_tokens=False).input_ids
            ids = torch.tensor([pi + ai])
            labels = torch.tensor([[-100] * len(pi) + ai])
            want.append(model(ids, labels=labels).loss.item())
        assert answer_nll(model, tok, prompts[:1], golds[:1]) == pytest.approx(want[:1], rel=1e-5)
        assert answer_nll(model, tok, prompts, golds) == pytest.approx(want, rel=1e-4)
