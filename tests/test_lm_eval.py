"""Model-card checks on a tiny model: held-out pairs, loss with/without memory, perplexity."""
import json
import math

import pytest
import torch

from memoryllm_repro import MemoryLLM, load_tokenizer
from memoryllm_repro.data.world import World
from memoryllm_repro.eval.lm import (document_losses, heldout_fact_pairs, heldout_generic_pairs, memory_loss,
                                    main, paired_ratio, perplexity, pooled_perplexity)


def test_pairs_losses_and_perplexity():
    tok = load_tokenizer("smollm2-135m")
    facts = heldout_fact_pairs(tok, n=4)
    names = [p.name for p in World(0, "heldout").people] + [t.name for t in World(0, "heldout").towns]
    assert all(any(nm in tok.decode(x1) for nm in names) for x1, _ in facts)
    generic = heldout_generic_pairs(tok, n=3)
    assert len(generic) == 3 and all(len(a) >= 16 and len(b) >= 16 for a, b in generic)
    model = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    model.inject_memory(torch.tensor([generic[0][0]]))
    pool = model.memory.clone()
    res = memory_loss(model, facts)
    assert torch.equal(model.memory, pool)                      # each pair ran inside a snapshot
    assert res["n"] == 4 and math.isfinite(res["loss_with_memory"]) and res["loss_with_memory"] != res[
        "loss_without_memory"]
    ppl = perplexity(model, tok, texts=["hello world, this is a short text for a perplexity check."])
    assert 1 < ppl < 49152 * 2


def test_document_losses_and_the_paired_ratio():
    tok = load_tokenizer("smollm2-135m")
    model = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    texts = ["hello world, this is a short text for a perplexity check.", "x", "another held-out document, longer "
             "than the first one by a few words."]
    docs = document_losses(model, tok, texts=texts, use_memory=False)
    assert len(docs) == 2 and all(n >= 1 for _, n in docs)          # the 1-token text has nothing to predict
    assert math.isclose(perplexity(model, tok, texts=texts, use_memory=False),
                        math.exp(sum(x for x, _ in docs) / sum(n for _, n in docs)), rel_tol=1e-9)
    assert pooled_perplexity(docs) == perplexity(model, tok, texts=texts, use_memory=False)
    same = paired_ratio(docs, docs, resamples=200)
    assert same["ratio"] == same["low"] == same["high"] == 1.0
    worse = [(x + 0.1 * n, n) for x, n in docs]                      # 0.1 nats per token more on every document
    r = paired_ratio(docs, worse, resamples=200)
    assert math.isclose(r["ratio"], math.exp(0.1)) and r["low"] > 1.0 and r["documents"] == 2
    mixed = [(docs[0][0] + 2.0 * docs[0][1], docs[0][1]), (docs[1][0] - 2.0 * docs[1][1], docs[1][1])]
    r = paired_ratio(docs, mixed, resamples=500)                      # one document better, one worse
    assert r["low"] < 1.0 < r["high"]
    for bad in (docs[:1], [(docs[0][0], docs[0][1] + 1), docs[1]]):
        with pytest.raises(ValueError):
            paired_ratio(docs, bad)
    with pytest.raises(ValueError):
        paired_ratio([], [])


def test_compare_command_on_tiny_models(capsys):
    """The command behind the README's per-document comparison: a model against itself is exactly level."""
    main(["--model", "tiny", "--against", "tiny", "--threads", "1"])
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"empty", "warm"}
    for mem in out.values():
        assert mem["documents"] >= 30 and mem["base"] == mem["other"] > 1
        assert mem["ratio"] == mem["low"] == mem["high"] == 1.0
