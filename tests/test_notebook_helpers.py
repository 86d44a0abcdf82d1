"""The library functions the notebooks call instead of carrying logic: run parameters read from the notebook's own
parameters cell, Figure 4's evidence places, Table 1's paper layout, Figure 6's record count, the walkthrough's
attention capture."""
from pathlib import Path

import pandas as pd
import pytest
import torch

from memoryllm_repro import MemoryLLM
from memoryllm_repro.eval.attention import memory_attention_mass
from memoryllm_repro.eval.editing import PAPER_TABLE1, paper_layout, paper_table1, table1_methods, write_table1
from memoryllm_repro.eval.longbench import evidence_breakdown, evidence_place
from memoryllm_repro.results import notebook_params, parameter_names

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("*.py")))
def test_parameter_names_match_each_notebook_and_its_ci_config(name):
    import yaml
    names = parameter_names((NOTEBOOKS / f"{name}.py").read_text())
    assert names and len(names) == len(set(names))
    ci = yaml.safe_load((NOTEBOOKS.parent / "configs" / "notebooks" / f"{name}.ci.yaml").read_text())
    assert set(ci) <= set(names)       # papermill may only set what the parameters cell defines


def test_notebook_params_takes_values_from_the_namespace(tmp_path):
    src = tmp_path / "nb.py"
    src.write_text('# %% [markdown]\n# x = 1 is prose\n\n# %% tags=["parameters"]\na = 1\nb: int = 2\n'
                   'c, d = 3, 4\n\n# %%\ne = 5\n')
    assert parameter_names(src.read_text()) == ["a", "b", "c", "d"]
    ns = dict(a=10, b=2, c=3, d=4, e=5)           # a as papermill's injected cell left it
    assert notebook_params(ns, "nb", source=src) == dict(a=10, b=2, c=3, d=4)
    with pytest.raises(KeyError, match="'d'"):
        notebook_params(dict(a=1, b=2, c=3), "nb", source=src)
    src.write_text("# %%\na = 1\n")
    with pytest.raises(ValueError, match="parameters"):
        parameter_names(src.read_text())
    with pytest.raises(FileNotFoundError):
        notebook_params({}, "no_such_notebook")


def test_evidence_places():
    assert [evidence_place(w) for w in ("prompt", "cut", "memory-1", "memory-3", "memory-4")] == [
        "prompt", "cut", "memory, 1 chunk back", "memory, 2-3 chunks back", "memory, 4+ chunks back"]
    df = pd.DataFrame([dict(task="t", method="memoryllm", evidence="memory-2", f1=1.0, f1_first_line=1.0),
                       dict(task="t", method="memoryllm", evidence="memory-3", f1=0.0, f1_first_line=0.5),
                       dict(task="t", method="memoryllm", evidence=None, f1=1.0, f1_first_line=1.0),
                       dict(task="t", method="backbone_full", evidence="prompt", f1=1.0, f1_first_line=1.0)])
    out = evidence_breakdown(df)
    assert out.to_dict("records") == [dict(task="t", place="memory, 2-3 chunks back", n=2, f1=50.0,
                                           f1_first_line=75.0)]


def test_table1_paper_layout_and_files(tmp_path):
    table = pd.DataFrame([dict(dataset="counterfact", method="ROME", score=50.04, efficacy=90.0,
                               generalization=40.0, specificity=20.0, n=2)])
    ours = paper_layout(table)
    assert ours.to_dict("records") == [{"method": "ROME", "zsre score": None, "zsre efficacy": None,
                                        "zsre generalization": None, "zsre specificity": None,
                                        "counterfact score": 50.0, "counterfact efficacy": 90.0,
                                        "counterfact generalization": 40.0, "counterfact specificity": 20.0}]
    paper = paper_table1()
    assert paper.set_index("method").loc["IKE", "counterfact score"] == PAPER_TABLE1["counterfact"]["IKE"][0]
    paths = write_table1(ours, "header line", tmp_path, "t1")
    assert [p.name for p in paths] == ["t1.csv", "t1.md", "t1.tex"]
    assert paths[1].read_text().startswith("header line\n\n| method") and "Paper (Llama-2-7B)" in paths[1].read_text()
    assert list(table1_methods(["IKE", "backbone"], ike_demos=[])) == ["backbone", "IKE"]   # the paper's order
    with pytest.raises(ValueError, match="unknown"):
        table1_methods(["MEMIT"], ike_demos=[])


def test_memory_attention_mass_restores_the_attention_implementation():
    model = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    model.inject_memory(torch.randint(100, 1000, (1, 40)))
    impl = model.base.config._attn_implementation
    hooks = [len(layer.self_attn._forward_hooks) for layer in model.layers]
    mass = memory_attention_mass(model, torch.randint(100, 1000, (1, 8)))
    assert mass.shape == (model.L, model.N // model.K) and (mass >= 0).all() and (mass.sum(1) <= 1 + 1e-5).all()
    assert model.base.config._attn_implementation == impl
    with pytest.raises(Exception):
        memory_attention_mass(model, torch.zeros(1, 0, dtype=torch.long))    # fails inside the forward pass
    assert model.base.config._attn_implementation == impl
    assert [len(layer.self_attn._forward_hooks) for layer in model.layers] == hooks


def test_ablation_stand_in_is_labelled_untrained(tmp_path):
    """Without a trained run, Figure 7 gets a tiny stand-in with the configuration's N and K, marked untrained."""
    from memoryllm_repro.train.ablation import ablation_model
    got = ablation_model("k64_n20", use_checkpoint=False, stand_in_steps=1, stand_in_dir=tmp_path)
    assert not got.trained and "UNTRAINED" in got.note
    assert (got.model.config.num_blocks, got.model.K) == (20, 64)
