"""Figure 6 stream: windowed accuracy / EMA on hand-written sequences, and surviving a SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from memoryllm_repro.eval.integrity import asked, ema, run_integrity, stream_status, windowed_accuracy


def test_windowed_accuracy_and_ema():
    hits = [1, 0, 1, 1, 0, 0]
    assert windowed_accuracy(hits, 3) == pytest.approx([1, 0.5, 2 / 3, 2 / 3, 2 / 3, 1 / 3])
    assert ema([1, 0], 0.5) == pytest.approx([1.0, 0.5 / 1.5])          # bias-corrected
    assert ema([0, 1, 1], 0.0) == [0, 1, 1]                                 # no memory: the last value
    assert ema([1] * 5, 0.9999) == pytest.approx([1] * 5)


def _run(out, updates, ask_every=3, **kw):
    args = [sys.executable, "-m", "memoryllm_repro.eval.integrity", "--model", "tiny", "--updates", str(updates),
            "--examples", "10", "--checkpoint-every", "5", "--health-every", "5", "--out", str(out),
            "--ask-every", str(ask_every), "--dense-until", "12"]
    return subprocess.Popen(args, env=dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=kw.get("stderr", subprocess.DEVNULL))


def test_killed_stream_resumes_without_gaps_or_duplicates(tmp_path):
    ref = _run(tmp_path / "ref", 30)
    assert ref.wait(timeout=600) == 0
    victim = _run(tmp_path / "run", 30)
    meta = tmp_path / "run" / "state" / "meta.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if json.loads(meta.read_text())["update"] >= 10:
                break
        except (OSError, ValueError):
            pass
        assert victim.poll() is None
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert json.loads(meta.read_text())["update"] < 30
    assert _run(tmp_path / "run", 30).wait(timeout=600) == 0
    for name in ("records.jsonl", "health.jsonl"):
        want = (tmp_path / "ref" / name).read_text().splitlines()
        got = (tmp_path / "run" / name).read_text().splitlines()
        assert got == want, name
    rec = [json.loads(l) for l in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    # asked after every update up to 12, then after every 3rd: the schedule survives the kill too
    assert [r["update"] for r in rec] == list(range(1, 13)) + [15, 18, 21, 24, 27, 30]
    status = stream_status(tmp_path / "run")
    assert status["update"] == 30 and status["seconds"] > 0


def test_ask_schedule_and_bad_arguments(tmp_path):
    assert [u for u in range(1, 31) if asked(u, 10, 5)] == [1, 2, 3, 4, 5, 10, 20, 30]
    assert all(asked(u) for u in range(1, 5))
    assert stream_status(tmp_path) == {"update": 0, "seconds": 0.0}
    with pytest.raises(ValueError, match="ask_every"):
        run_integrity(None, None, [], tmp_path / "x", 10, ask_every=0)
    assert not (tmp_path / "x").exists()


def test_resume_with_another_schedule_is_refused(tmp_path):
    assert _run(tmp_path, 10).wait(timeout=600) == 0
    files = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    bad = _run(tmp_path, 20, ask_every=2, stderr=subprocess.PIPE)
    _, err = bad.communicate(timeout=600)
    assert bad.returncode != 0 and b"holds a stream started with other ask_every (" in err
    assert {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == files     # nothing changed


def test_resume_with_another_model_is_refused(tmp_path):
    """A stream remembers its checkpoint's fingerprint: after a new default is installed, or with any other
    weights, the resume is refused before anything changes; the same weights resume."""
    from memoryllm_repro.checkpoints import load_model
    from memoryllm_repro.eval.integrity import model_fingerprint
    from memoryllm_repro.eval.retention import retention_data
    assert _run(tmp_path, 10).wait(timeout=600) == 0
    files = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    model, tok, _ = load_model("tiny")
    examples, _ = retention_data("bundled", tok, 11, 1, seed=2)
    args = dict(checkpoint_every=5, health_every=5, probe=examples[0], progress=False, ask_every=3, dense_until=12)
    assert model_fingerprint(model) == model_fingerprint(load_model("tiny")[0])
    other = load_model("tiny")[0]
    other.config.memory_positions = "shared"          # same weights, other reads
    assert model_fingerprint(other) != model_fingerprint(model)
    with torch.no_grad():
        model.new_memory_positional_emb.add_(1e-3)
    with pytest.raises(ValueError, match="started with other model \\("):
        run_integrity(model, tok, examples[1:], tmp_path, 15, **args)
    assert {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == files     # nothing changed
    model, tok, _ = load_model("tiny")
    run_integrity(model, tok, examples[1:], tmp_path, 15, **args)
    assert stream_status(tmp_path)["update"] == 15
