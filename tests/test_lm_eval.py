"""Model-card checks on a tiny model: held-out pairs, loss with/without memory, perplexity."""
import math

import torch

from memoryllm_repro import MemoryLLM, load_tokenizer
from memoryllm_repro.data.world import World
from memoryllm_repro.eval.lm import heldout_fact_pairs, heldout_generic_pairs, memory_loss, perplexity


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
