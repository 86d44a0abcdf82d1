"""The authors' sample indices (indices_squad_3.npy / indices_nq_4.npy under data/) select the retention examples."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from memoryllm_repro import load_tokenizer
from memoryllm_repro.data import qa_datasets as qa
from memoryllm_repro.eval.retention import retention_data

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


def test_squad_indices_file_is_used(tmp_path, tok):
    (tmp_path / "squad").mkdir()
    for name in ("dev-v2.0.json", "train-v2.0.json"):
        shutil.copy(FIX / "squad_v2_mini.json", tmp_path / "squad" / name)
    ex, _ = retention_data("squad", tok, 5, 0, data_dir=str(tmp_path))
    assert [e.id for e in ex] == ["q1", "q4"]                          # no indices file: the filtered list
    np.save(tmp_path / "squad" / "indices_squad_3.npy", np.array([1]))
    ex, _ = retention_data("squad", tok, 5, 0, data_dir=str(tmp_path))
    assert [e.id for e in ex] == ["q4"]


def test_nq_indices_file_is_used(tmp_path, tok):
    (tmp_path / "nq").mkdir()
    good = [json.loads(line) for line in (FIX / "nq_dev_mini.jsonl").read_text().splitlines()
            if json.loads(line)["annotations"][0]["short_answers"]][0]
    with open(tmp_path / "nq" / "v1.0-simplified_nq-dev-all.jsonl", "w") as f:
        for i in ("a", "b", "c"):
            f.write(json.dumps(dict(good, example_id=i)) + "\n")
    shutil.copy(FIX / "nq_simplified_mini.jsonl", tmp_path / "nq" / "v1.0-simplified_simplified-nq-train.jsonl")
    np.save(tmp_path / "nq" / "indices_nq_4.npy", np.array([0, 2]))
    ex, _ = retention_data("nq", tok, 5, 0, data_dir=str(tmp_path))
    assert [e.id for e in ex] == ["a", "c"]


def test_bad_indices_file_is_refused(tmp_path):
    np.save(tmp_path / "bad.npy", np.array([[0.5]]))
    with pytest.raises(ValueError, match="1-D array"):
        qa.authors_indices(tmp_path / "bad.npy")
    assert qa.authors_indices(tmp_path / "missing.npy") is None
