"""Editing data formats and metrics on hand-computed cases."""
import json

import pytest
import torch

from memoryllm_repro.data import editing as ed
from memoryllm_repro.eval import editing as em


def test_bundled_records_in_rome_formats(tmp_path):
    cf = ed.bundled_counterfact()
    assert len(cf) > 100
    r = next(x for x in cf if x["requested_rewrite"]["subject"] == "Lyon")
    rw = r["requested_rewrite"]
    assert rw["target_true"]["str"] == "France" and rw["target_new"]["str"] != "France"
    assert "Paris is located in the country of" in r["neighborhood_prompts"]
    (tmp_path / "counterfact.json").write_text(json.dumps(cf[:3]))
    assert ed.load_counterfact(tmp_path / "counterfact.json") == cf[:3]
    z = ed.bundled_zsre()
    z[0]["loc"] = "nq question: who wrote hamlet"
    (tmp_path / "zsre_mend_eval.json").write_text(json.dumps(z[:2]))
    back = ed.load_zsre(tmp_path / "zsre_mend_eval.json")
    assert back[0]["loc"] == "who wrote hamlet?" and back[1]["alt"] == z[1]["alt"]
    hamlet = next(x for x in ed.bundled_zsre() if x["subject"] == "Hamlet")
    assert hamlet["answers"] == ["William Shakespeare"] and hamlet["alt"] != "William Shakespeare"
    assert all(r["loc_ans"] and r["alt"] not in r["answers"] for r in ed.bundled_zsre())
    picked = ed.subsample(cf, 20, seed=0)
    assert len(picked) == 20 and picked == ed.subsample(cf, 20, seed=0) and picked != cf[:20]
    assert ed.subsample(cf, 20, seed=None) == cf[:20] and ed.subsample(cf, None) == cf


def test_table_row_harmonic_mean():
    rows = [{"efficacy": 1.0, "generalization": 0.5, "specificity": 1.0},
            {"efficacy": 0.0, "generalization": 0.5, "specificity": float("nan")}]
    t = em.table_row(rows)
    assert t["efficacy"] == 50 and t["generalization"] == 50 and t["specificity"] == 100 and t["n"] == 2
    assert t["score"] == pytest.approx(3 / (1 / 50 + 1 / 50 + 1 / 100))
    assert em.table_row([{"efficacy": 0.0, "generalization": 1.0, "specificity": 1.0}])["score"] == 0.0


class FixedLM:
    """A fake model whose next-token distribution is fixed: token 7 is twice as likely as token 9."""
    device = "cpu"

    def __call__(self, ids, use_memory=True, logits_to_keep=0):
        logits = torch.full((*ids.shape, 12), -10.0)
        logits[..., 7], logits[..., 9] = 0.0, -0.6931471805599453
        return type("O", (), {"logits": logits[:, -logits_to_keep:]})()


class Tok:
    def __call__(self, text, add_special_tokens=False):
        ids = [7 if w == "A" else 9 if w == "B" else 1 for w in text.split()]
        return type("E", (), {"input_ids": ids})()


def test_probability_metrics_hand_computed():
    m, tok = FixedLM(), Tok()
    assert em.target_logprob(m, tok, "x y", "B B") < em.target_logprob(m, tok, "x y", "A")
    rec = {"requested_rewrite": {"prompt": "{} is", "subject": "x", "target_new": {"str": "A"},
                                 "target_true": {"str": "B"}},
           "paraphrase_prompts": ["x be"], "neighborhood_prompts": ["y is"]}
    s = em.counterfact_scores(m, tok, rec)
    assert s == {"efficacy": 1.0, "generalization": 1.0, "specificity": 0.0}
    assert em.token_accuracy(m, tok, "q", "A B A") == pytest.approx(2 / 3)


def test_batched_scoring_equals_one_by_one():
    """Prompts and targets of different lengths in one right-padded pass score as they do alone."""
    from memoryllm_repro import MemoryLLM, load_tokenizer
    tok = load_tokenizer("smollm2-135m")
    model = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    model.inject_memory(tok("A warm pool, so that the scores read memory too.", return_tensors="pt").input_ids)
    pairs = [("The capital of France is", "Paris"), ("Q: who wrote Hamlet? A:", "William Shakespeare"),
             ("x", "a rather long target of many tokens")]
    for use_memory in (True, False):
        one = [em.target_logprob(model, tok, p, t, use_memory) for p, t in pairs]
        assert em.target_logprobs(model, tok, pairs, use_memory) == pytest.approx(one, rel=1e-5, abs=1e-4)
        one = [em.token_accuracy(model, tok, p, t, use_memory) for p, t in pairs]
        assert em.token_accuracies(model, tok, pairs, use_memory) == one


def test_editors_change_preference_and_restore():
    from memoryllm_repro import MemoryLLM, load_tokenizer
    from memoryllm_repro.editors import FT, IKE, ROME, MemoryEdit, NoEdit, OnBackbone
    tok = load_tokenizer("smollm2-135m")
    model = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    model.inject_memory(tok("Context: a warm pool for the editing test, long enough to be written.",
                            return_tensors="pt").input_ids)
    recs = ed.bundled_counterfact()
    rec = next(r for r in recs if r["requested_rewrite"]["subject"] == "Lyon")
    before = em.counterfact_scores(model, tok, rec)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    pool = model.memory.clone()
    with FT(steps=40, lr=5e-3)(model, tok, rec):                       # FT is expected to flip the edit prompt
        assert em.counterfact_scores(model, tok, rec)["efficacy"] == 1.0
    with ROME(layer=0, num_docs=20)(model, tok, rec):                  # so is ROME (rank-one edit of layer 0)
        assert em.counterfact_scores(model, tok, rec, use_memory=False)["efficacy"] == 1.0
    for editor in (FT(steps=3), FT(steps=3, norm_constraint=1e-4), MemoryEdit(), IKE(recs[:10], k=3),
                   NoEdit(use_memory=False), OnBackbone(FT(steps=2))):
        with editor(model, tok, rec):
            em.counterfact_scores(model, tok, rec, prefix=getattr(editor, "prefix", ""), **editor.scoring)
        assert all(torch.equal(weights[n], p) for n, p in model.named_parameters())    # restored
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(model.memory, pool)
    assert em.counterfact_scores(model, tok, rec) == before
