"""LongBench loading without loading scripts (datasets>=4): jsonl / parquet files, LongBench's folder layout,
the hub copy's field names, and a clear error for a script-based hub dataset."""
import json

import pandas as pd
import pytest

from memoryllm_repro.eval import longbench as lb

EX = {"input": "Who?", "context": "Some passages.", "answers": ["Ann", "Anna"], "length": 3, "dataset": "hotpotqa",
      "language": "en", "all_classes": None, "_id": "x1"}


def test_jsonl_parquet_and_data_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hotpotqa.jsonl").write_text(json.dumps(EX) + "\n\n")     # data.zip's layout
    assert lb.load_longbench("hotpotqa", str(tmp_path)) == [EX]
    pq = tmp_path / "qasper.parquet"
    pd.DataFrame([dict(EX, _id="p1"), dict(EX, _id="p2", answers=["Bo"])]).to_parquet(pq)
    rows = lb.load_longbench("qasper", str(pq))
    assert [r["_id"] for r in rows] == ["p1", "p2"] and rows[1]["answers"] == ["Bo"]
    assert lb.load_longbench("qasper", str(tmp_path)) == rows                     # <task>.parquet in a folder
    with pytest.raises(FileNotFoundError, match="musique"):
        lb.load_longbench("musique", str(tmp_path))


def test_hub_copy_field_names_and_bad_rows(tmp_path):
    mirror = {"context": "Text.", "question": "Where?", "answers": ["Rome"], "length": 2}
    (tmp_path / "musique.jsonl").write_text(json.dumps(mirror) + "\n")
    (row,) = lb.load_longbench("musique", str(tmp_path))
    assert row["input"] == "Where?" and lb.build_prompt("musique", row).rstrip().endswith("Answer:")
    (tmp_path / "narrativeqa.jsonl").write_text(json.dumps({"context": "x"}) + "\n")
    with pytest.raises(ValueError, match="lacks LongBench field"):
        lb.load_longbench("narrativeqa", str(tmp_path))


def test_script_dataset_gets_a_clear_error(monkeypatch):
    import datasets

    def refuse(*a, **k):
        raise RuntimeError("Dataset scripts are no longer supported, but found LongBench.py")
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(RuntimeError, match="data.zip"):
        lb.load_longbench("hotpotqa", "THUDM/LongBench")
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a) or [dict(EX)])
    assert lb.load_longbench("hotpotqa") == [EX] and calls == [(lb.LONGBENCH_HUB, "hotpotqa")]
