"""memoryllm-experiment: parameters collected and checked before anything runs, notebook prepared by papermill."""
import json

import pytest

from memoryllm_repro import experiments
from memoryllm_repro.paths import ROOT


def test_parameters_full_file_and_pairs(tmp_path):
    extra = tmp_path / "p.yaml"
    extra.write_text("num_examples: 5\nseed: 3\n")
    p = experiments.collect_parameters("figure5", full=True, files=[extra],
                                       pairs=[("num_examples", "7"), ("datasets", "[squad]")])
    assert p["device"] == "cuda"                       # from figure5_retention.full.yaml
    assert p["seed"] == 3 and p["num_examples"] == 7 and p["datasets"] == ["squad"]   # later wins, YAML values
    with pytest.raises(ValueError, match="not parameters"):
        experiments.collect_parameters("figure5", pairs=[("num_exmples", "7")])
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.collect_parameters("figure9")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        experiments.collect_parameters("table1", files=[bad])


def test_every_experiment_has_a_notebook_and_defaults():
    for name in experiments.EXPERIMENTS:
        assert experiments.notebook_defaults(name)
    assert set(experiments.DEFAULT_ORDER) <= set(experiments.EXPERIMENTS)


def test_cli_prepares_notebook_with_parameters(tmp_path):
    out = tmp_path / "f5.ipynb"
    rc = experiments.main(["figure5", "--prepare-only", "--quiet", "--out", str(out), "-p", "num_examples", "2"])
    assert rc == 0
    nb = json.loads(out.read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "num_examples = 2" in "".join(injected[0]["source"])
    assert experiments.main(["figure5", "--prepare-only", "-p", "nope", "1"]) == 2   # refused, nothing written


def test_installed_layout_says_where_notebooks_are(tmp_path):
    with pytest.raises(FileNotFoundError, match="live in the memoryllm-repro repository"):
        experiments.notebook_source("figure5", root=tmp_path)
    assert (ROOT / "notebooks").is_dir()
