"""Reliability: nothing a user can hand the library corrupts a memory or runs code, and a killed run resumes.

One test per class of the adversarial review, parametrised over its cases. Every failing call must raise the named
error type with a message naming the problem, and leave pool, generator state and `initialized` bit-identical
(parameters too, where weights are loaded)."""
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import make_model, rand_ids
from memoryllm_repro import MemoryLLM, persistence, tiny_llama
from memoryllm_repro.train import TrainConfig, Trainer

warnings.filterwarnings("ignore", message="context of")
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads; on a shared machine two OpenMP threads cost 10x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_SHARED = {}


def shared(key, build):
    """One model per kind for a whole parametrised test: each failing call is checked to leave it bit-identical,
    so the next case starts from the same state (and a case that did change it would fail there)."""
    if key not in _SHARED:
        _SHARED[key] = build()
    return _SHARED[key]


def filled(dtype=torch.float64, writes=3, **cfg):
    model = make_model(dtype=dtype, **cfg)
    for i in range(writes):
        model.inject_memory(rand_ids(20, seed=100 + i))
    return model


def state(model):
    """Everything that defines the memory, as plain copies."""
    return (model.memory_state()["memory"].clone(), model.generator.get_state().clone(), model.initialized,
            model.num_memories)


def assert_same(model, before):
    pool, gen, init, B = before
    now = model.memory_state()["memory"]
    assert now.dtype == pool.dtype and torch.equal(now, pool), "pool changed"
    assert torch.equal(model.generator.get_state(), gen), "generator state changed"
    assert model.initialized == init and model.num_memories == B


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def fails_cleanly(model, call, exc, match):
    before, weights = state(model), params(model)
    with pytest.raises(exc, match=match):
        call()
    assert_same(model, before)
    after = params(model)
    assert all(torch.equal(weights[n], after[n]) for n in weights), "parameters changed"


def read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


# ---------------------------------------------------------------------------------------------- 1: after the cast
def _big(model, rows, value, dtype):
    return torch.full((model.num_memories, model.L, rows, model.d), value, dtype=dtype)


NONFINITE = {
    "f64 1e300 delta -> f32 pool": (torch.float32, lambda m: m.write_memory(_big(m, m.K, 1e300, torch.float64))),
    "f64 -1e300 delta -> f32 pool": (torch.float32, lambda m: m.write_memory(_big(m, m.K, -1e300, torch.float64))),
    "f32 1e30 delta -> f16 pool": (torch.float16, lambda m: m.write_memory(_big(m, m.K, 1e30, torch.float32))),
    "f32 1e5 delta -> f16 pool": (torch.float16, lambda m: m.write_memory(_big(m, m.K, 1e5, torch.float32))),
    "f64 1e300 delta -> bf16 pool": (torch.bfloat16, lambda m: m.write_memory(_big(m, m.K, 1e300, torch.float64))),
    "f64 1e300 set_memory -> f32": (torch.float32, lambda m: m.set_memory(_big(m, m.N, 1e300, torch.float64))),
    "f32 1e30 set_memory -> f16": (torch.float16, lambda m: m.set_memory(_big(m, m.N, 1e30, torch.float32))),
    "one inf element in a delta": (torch.float32, lambda m: m.write_memory(
        torch.zeros(1, m.L, m.K, m.d).index_put_((torch.tensor([0]),) * 4, torch.tensor(float("inf"))))),
    "f64 1e300 file, cast=True": (torch.float32, "file"),
}


@pytest.mark.parametrize("case", list(NONFINITE))
def test_class1_nonfinite_after_the_cast(case, tmp_path):
    dtype, call = NONFINITE[case]
    model = shared(("filled", dtype), lambda: filled(dtype=dtype, writes=2))
    if call == "file":
        src = make_model(dtype=torch.float64)
        src.set_memory(_big(src, src.N, 1e300, torch.float64))
        src.save_memory(tmp_path / "m.safetensors")
        call = lambda m: m.load_memory(tmp_path / "m.safetensors", cast=True)  # noqa: E731
    fails_cleanly(model, lambda: call(model), ValueError, "non-finite")
    assert bool(torch.isfinite(model.memory.float()).all())


def test_class1_checked_cast_still_writes_finite_values():
    model = filled(dtype=torch.float16, writes=1)
    delta = torch.randn(1, model.L, model.K, model.d, dtype=torch.float64)
    model.write_memory(delta)
    assert torch.equal(model.memory[:, -model.K:], delta[0].half())


# ---------------------------------------------------------------------------------------------- 2: load_memory
def _file_variant(src_path, dst_path, edit):
    tensors, meta = read(src_path)
    edit(tensors, meta)
    save_file(tensors, str(dst_path), metadata=meta)


def _pop(key):
    return lambda t, m: t.pop(key)


def _set(key, value):
    def edit(t, m):
        t[key] = value(t[key]) if callable(value) else value
    return edit


def _meta(key, value):
    return lambda t, m: m.__setitem__(key, value) if value is not None else m.pop(key)


BAD_MEMORY_FILES = {
    "missing initialized": (_pop("initialized"), r"missing \['initialized'\]"),
    "missing generator_state": (_pop("generator_state"), r"missing \['generator_state'\]"),
    "missing memory": (_pop("memory"), r"missing \['memory'\]"),
    "unexpected tensor": (_set("extra", torch.zeros(1)), r"unexpected \['extra'\]"),
    "generator state too short": (_set("generator_state", lambda g: g[:100].clone()), "generator_state"),
    "generator state int64": (_set("generator_state", lambda g: g.long()), "generator_state must be a uint8"),
    "memory of another dtype": (_set("memory", lambda x: x.float()), "float32 pool.*cast=True"),
    "zero-batch memory": (_set("memory", lambda x: x[:0].clone()), r"B>=1"),
    "memory wrong shape": (_set("memory", lambda x: x[:, :, :-1].clone()), "memory must have shape"),
    "memory with NaN": (_set("memory", lambda x: x.clone().fill_(float("nan"))), "non-finite"),
    "memory int64": (_set("memory", lambda x: x.long()), "int64 pool|floating-point"),
    "initialized = 2": (_set("initialized", torch.tensor(2)), "initialized must be"),
    "initialized of 3 values": (_set("initialized", torch.tensor([1, 1, 1])), "initialized must be one value"),
    "other memory_source": (_meta("memory_source", "input"), "memory_source"),
    "other add_bos_embedding": (_meta("add_bos_embedding", "False"), "add_bos_embedding"),
    "other N": (_meta("N", "999"), "different config"),
    "no format tag": (_meta("format", None), "not a memoryllm-repro memory file"),
}


@pytest.fixture(scope="module")
def memory_file(tmp_path_factory):
    src = filled(writes=2)
    path = tmp_path_factory.mktemp("mem") / "good.safetensors"
    src.save_memory(path)
    return path


@pytest.mark.parametrize("case", list(BAD_MEMORY_FILES) + ["truncated file", "garbage bytes", "a directory",
                                                           "no such file"])
def test_class2_load_memory_checks_the_whole_file_first(case, memory_file, tmp_path):
    model = shared("filled4", lambda: filled(writes=4))
    bad = tmp_path / "bad.safetensors"
    exc = ValueError
    if case in BAD_MEMORY_FILES:
        edit, match = BAD_MEMORY_FILES[case]
        _file_variant(memory_file, bad, edit)
    elif case == "truncated file":
        bad.write_bytes(memory_file.read_bytes()[: memory_file.stat().st_size // 2])
        match = "not a readable safetensors file"
    elif case == "garbage bytes":
        bad.write_bytes(b"\x80\x04 not a safetensors file at all" * 10)
        match = "not a readable safetensors file"
    elif case == "a directory":
        bad = tmp_path / "folder"
        bad.mkdir()
        (bad / "memory.safetensors").write_bytes(memory_file.read_bytes())
        exc, match = IsADirectoryError, r"is a directory; did you mean .*memory.safetensors"
    else:
        exc, match, bad = FileNotFoundError, "does not exist", tmp_path / "nope.safetensors"
    fails_cleanly(model, lambda: model.load_memory(bad), exc, match)


def test_class2_good_file_and_explicit_cast(memory_file):
    model = filled(writes=4)
    model.load_memory(memory_file)
    tensors, _ = read(memory_file)
    assert torch.equal(model.memory, tensors["memory"][0]) and model.initialized
    low = filled(dtype=torch.float32, writes=1)
    low.load_memory(memory_file, cast=True)         # the opt-in: cast, then checked
    assert torch.equal(low.memory, tensors["memory"][0].float())


# ---------------------------------------------------------------------------------------------- 3: weights
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    model = filled(writes=2)
    model.add_lora(r=4, lora_dropout=0.0)
    with torch.no_grad():
        for n, p in model.base.named_parameters():
            if "lora_B" in n:
                p.normal_()
    out = tmp_path_factory.mktemp("ckpt") / "good"
    model.save_pretrained(out, save_tokenizer=False)
    return out


def _weights(edit_own=None, edit_lora=None, edit_config=None, drop_adapter=False):
    def apply(f):
        if edit_own:
            t, m = read(f / persistence.WEIGHTS_FILE)
            edit_own(t)
            save_file(t, str(f / persistence.WEIGHTS_FILE), metadata=m)
        if edit_lora:
            p = f / persistence.ADAPTER_DIR / persistence.ADAPTER_WEIGHTS
            t, m = read(p)
            edit_lora(t)
            save_file(t, str(p), metadata=m)
        if edit_config:
            cfg = json.loads((f / "config.json").read_text())
            edit_config(cfg)
            (f / "config.json").write_text(json.dumps(cfg))
        if drop_adapter:
            shutil.rmtree(f / persistence.ADAPTER_DIR)
    return apply


def _first_lora(t, which="lora_B"):
    return next(k for k in sorted(t) if which in k)


BAD_FOLDERS = {
    "bos [1,1,d] (broadcasts)": (_weights(lambda t: t.__setitem__("bos_embedding", t["bos_embedding"][:1].clone())),
                                 r"bos_embedding has shape \(1, 1, 64\), the model expects \(3, 1, 64\)"),
    "e_new of one element": (_weights(lambda t: t.__setitem__("new_memory_positional_emb", torch.ones(1))),
                             "new_memory_positional_emb has shape"),
    "LoRA B [1, r] (broadcasts)": (_weights(edit_lora=lambda t: t.__setitem__(
        _first_lora(t), t[_first_lora(t)][:1].clone())), r"lora_B.* has shape \(1, 4\)"),
    "LoRA tensor missing": (_weights(edit_lora=lambda t: t.pop(_first_lora(t, "lora_A"))), "1 missing"),
    "LoRA tensor unexpected": (_weights(edit_lora=lambda t: t.__setitem__("base_model.model.x.lora_A.weight",
                                                                          torch.zeros(4, 64))), "1 unexpected"),
    "bos_embedding missing": (_weights(lambda t: t.pop("bos_embedding")), r"missing \['bos_embedding'\]"),
    "unexpected learned tensor": (_weights(lambda t: t.__setitem__("memory", torch.zeros(1))),
                                  r"unexpected \['memory'\]"),
    "NaN in e_new": (_weights(lambda t: t["new_memory_positional_emb"].view(-1).__setitem__(0, float("nan"))),
                     "new_memory_positional_emb holds non-finite"),
    "inf in a LoRA matrix": (_weights(edit_lora=lambda t: t[_first_lora(t)].view(-1).__setitem__(0, float("inf"))),
                             "lora_B.*non-finite"),
    "bos_embedding int64": (_weights(lambda t: t.__setitem__("bos_embedding", t["bos_embedding"].long())),
                            "bos_embedding is torch.int64.*not floating point"),
    "LoRA rank in config != weights": (_weights(edit_config=lambda c: c["lora"].__setitem__("r", 8)),
                                       "LoRA rank is r=8; these weights have r=4"),
    "adapter without LoRA spec": (_weights(edit_config=lambda c: c.__setitem__("lora", None)),
                                  "holds a LoRA adapter .* no LoRA spec"),
    "LoRA spec without adapter": (_weights(drop_adapter=True), "adapter_model.safetensors is missing"),
    "memory_source changed in config": (_weights(edit_config=lambda c: c.__setitem__("memory_source", "input")),
                                        "different config.*memory_source"),
    "unknown memory_source": (_weights(edit_config=lambda c: c.__setitem__("memory_source", "middle")),
                              "memory_source must be one of"),
    "unknown long_input": (_weights(edit_config=lambda c: c.__setitem__("long_input", "ignore")),
                           "long_input must be one of"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_class3_from_pretrained_exact_keys_shapes_values(case, folder, tmp_path):
    edit, match = BAD_FOLDERS[case]
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    edit(bad)
    with pytest.raises(ValueError, match=match):
        MemoryLLM.from_pretrained(bad, dtype=torch.float64)
    if case.startswith(("unknown", "memory_source", "LoRA rank", "adapter without")):
        return                                      # config-level: no model to load weights into
    model = shared("from folder", lambda: MemoryLLM.from_pretrained(folder, dtype=torch.float64))
    fails_cleanly(model, lambda: persistence.load_weights(model, bad), ValueError, match)


def test_class3_good_folder_loads_identically_and_fp16_overflow_is_refused(folder, tmp_path):
    model = MemoryLLM.from_pretrained(folder, dtype=torch.float64)
    again = MemoryLLM.from_pretrained(folder, dtype=torch.float64)
    ids = rand_ids(9)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    big = tmp_path / "big"
    shutil.copytree(folder, big)
    _weights(lambda t: t["new_memory_positional_emb"].view(-1).__setitem__(0, 1e30))(big)
    MemoryLLM.from_pretrained(big, dtype=torch.float32)      # finite in float32
    with pytest.raises(ValueError, match="non-finite values in torch.float16"):
        MemoryLLM.from_pretrained(big, dtype=torch.float16)
    with pytest.raises(ValueError, match="is torch.float64, the model's is torch.float32"):
        persistence.load_weights(MemoryLLM.from_pretrained(folder, dtype=torch.float32), folder)   # no silent cast


# ---------------------------------------------------------------------------------------------- 4: snapshots
class RandomSamples:
    def sample(self, index, k):
        g = torch.Generator().manual_seed(index + 10 ** 6)
        ids = lambda: torch.randint(3, 255, (int(torch.randint(16, 24, (1,), generator=g)),), generator=g).tolist()  # noqa
        return {"contexts": [ids()], "target": ids(), "kind": "random"}


def trainer(out, steps, **kw):
    cfg = TrainConfig(out_dir=str(out), steps=steps, model=dict(num_blocks=4, num_tokens=8), eval_every=0,
                      save_every=2, curriculum_steps=[2], curriculum_values=[1, 1], log_nomem_loss=False, **kw)
    model = make_model(dtype=torch.float32)
    model.add_lora(r=4, lora_dropout=0.0)
    for n, p in model.named_parameters():
        p.requires_grad = "lora_" in n or n == "new_memory_positional_emb"
    return Trainer(cfg, model=model, tokenizer=object(), samples=RandomSamples())


def _steps(path):
    return [json.loads(l)["step"] for l in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    trainer(out, steps=4).train()
    return out


@pytest.mark.parametrize("leftover", ["stale step .tmp folder", "stale .tmp file in the run folder",
                                      "torn last log line", "killed before the first snapshot",
                                      "killed while pruning an old snapshot"])
def test_class4_leftovers_of_a_kill_do_not_block_resume(leftover, tmp_path, trained_run):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    ckpts = out / "checkpoints"
    if leftover == "stale step .tmp folder":
        (ckpts / "step-0000006.tmp").mkdir()
        (ckpts / "step-0000006.tmp" / "config.json").write_text("{half")
    elif leftover == "stale .tmp file in the run folder":
        (out / ".log.jsonl.abcd1234.tmp").write_text("junk")
    elif leftover == "torn last log line":
        with (out / "log.jsonl").open("a") as f:
            f.write('{"step": 5, "loss": 1.')
    elif leftover == "killed before the first snapshot":
        shutil.rmtree(ckpts)
    else:
        os.replace(ckpts / "step-0000002", ckpts / "step-0000002.old.tmp")
    again = trainer(out, steps=6)
    again.train()
    assert _steps(out / "log.jsonl") == list(range(1, 7))
    assert not list(ckpts.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    assert [p.name for p in persistence.snapshots(out)] == ["step-0000004", "step-0000006"]


def test_class4_resume_drops_redone_and_duplicate_validation_lines(tmp_path, trained_run):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    (out / "val.jsonl").write_text("".join(json.dumps({"step": s, "acc": 0.5}) + "\n" for s in (1, 2, 2, 3, 4, 5, 6)))
    tr = trainer(out, steps=6)
    assert tr.resume() and tr.state["step"] == 4
    assert _steps(out / "val.jsonl") == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- 5: no pickle
class Payload:
    """Unpickling this creates the marker file (what an attacker would replace by any command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_payload(path, marker, kind):
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "torch.save":
        torch.save({"model.embed_tokens.weight": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"weights": Payload(marker)}))


def test_class5_the_payload_does_run_when_unpickled_unsafely(tmp_path):
    """Control: the payload used below really executes under plain pickle / torch.load(weights_only=False)."""
    marker = tmp_path / "PWNED"
    _write_payload(tmp_path / "p.bin", marker, "raw pickle")
    pickle.loads((tmp_path / "p.bin").read_bytes())
    assert marker.exists()
    marker.unlink()
    _write_payload(tmp_path / "t.bin", marker, "torch.save")
    torch.load(tmp_path / "t.bin", weights_only=False)
    assert marker.exists()


def _official_folder(tmp_path):
    from test_official import write_official
    src = filled(dtype=torch.float32, writes=1)
    write_official(src, tmp_path / "official")
    return tmp_path / "official"


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pickle") / "run"
    trainer(out, steps=2).train()
    return out


PICKLE_TARGETS = ["trainer_state.json", "trainer_state.safetensors", "optimizer.safetensors", "memory.safetensors",
                  "memoryllm.safetensors", "adapter/adapter_model.safetensors", "official pytorch_model.bin",
                  "backbone pytorch_model.bin", "integrity state/memory.safetensors",
                  "integrity state/birth.safetensors", "integrity state/meta.json", "load_memory(file)"]


@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
@pytest.mark.parametrize("target", PICKLE_TARGETS)
def test_class5_a_crafted_pickle_is_never_executed(target, kind, snapshot_run, tmp_path):
    marker = tmp_path / "PWNED"
    if target in ("trainer_state.json", "trainer_state.safetensors", "optimizer.safetensors", "memory.safetensors"):
        run = tmp_path / "run"
        shutil.copytree(snapshot_run, run)
        _write_payload(run / "checkpoints" / "step-0000002" / target, marker, kind)
        call, exc = lambda: trainer(run, steps=4).resume(), ValueError
    elif target in ("memoryllm.safetensors", "adapter/adapter_model.safetensors", "backbone pytorch_model.bin"):
        snap = tmp_path / "snap"
        shutil.copytree(snapshot_run / "checkpoints" / "step-0000002", snap)
        if target == "backbone pytorch_model.bin":
            (snap / "backbone" / "model.safetensors").unlink()
            _write_payload(snap / "backbone" / "pytorch_model.bin", marker, kind)
            exc = Exception          # transformers' own loader (weights_only as well) refuses it
        else:
            _write_payload(snap / target, marker, kind)
            exc = ValueError
        call = lambda: MemoryLLM.from_pretrained(snap)  # noqa: E731
    elif target == "official pytorch_model.bin":
        off = _official_folder(tmp_path)
        for f in off.glob("model*"):
            f.unlink()
        _write_payload(off / "pytorch_model.bin", marker, kind)
        call, exc = lambda: MemoryLLM.from_pretrained(off), ValueError
    elif target.startswith("integrity"):
        from memoryllm_repro.eval.integrity import run_integrity
        model = filled(dtype=torch.float32, writes=1)
        out = tmp_path / "integrity"
        state_dir = out / "state"
        state_dir.mkdir(parents=True)
        model.save_memory(state_dir / "memory.safetensors")
        persistence.save_tensors({"birth": torch.zeros(model.L, model.N, dtype=torch.long)},
                                 state_dir / "birth.safetensors")
        (state_dir / "meta.json").write_text(json.dumps({"update": 5, "records_bytes": 0, "health_bytes": 0}))
        _write_payload(out / target.split(" ", 1)[1], marker, kind)
        call, exc = lambda: run_integrity(model, None, [], out, 5, progress=False), ValueError
    else:
        model = filled(writes=1)
        _write_payload(tmp_path / "memory.safetensors", marker, kind)
        call, exc = lambda: model.load_memory(tmp_path / "memory.safetensors"), ValueError
    with pytest.raises(exc):
        call()
    assert not marker.exists(), "the pickle was executed"


def test_class5_no_unsafe_deserialisation_in_the_sources():
    """Every torch.load says weights_only=True; no pickle/joblib/numpy-pickle loading anywhere we ship."""
    bad = []
    for root in ("memoryllm_repro", "bench", "notebooks"):
        for f in (REPO / root).rglob("*.py"):
            text = f.read_text()
            for m in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text):
                if "weights_only=True" not in m.group(0):
                    bad.append(f"{f.name}: {m.group(0)}")
            for pat in (r"pickle\.loads?\(", r"allow_pickle\s*=\s*True", r"joblib\.load", r"dill\.load"):
                bad += [f"{f.name}: {pat}" for _ in re.finditer(pat, text)]
    assert not bad, bad


# ---------------------------------------------------------------------------------------------- 6: no silent extrapolation
def short_model(**cfg):
    """max_position_embeddings 64; N = 32, BOS 1: a read of q tokens needs 33 + q positions."""
    base = tiny_llama(max_position_embeddings=64).to(torch.float32)
    model = MemoryLLM.from_base(base, num_blocks=4, num_tokens=8, **cfg)
    model.inject_memory(rand_ids(20))
    return model


def _readonly_cases():
    nan_mask = torch.ones(1, 8)
    nan_mask[0, 3] = float("nan")
    return {
        "read past the limit": (lambda m: m(rand_ids(32)), ValueError, r"this read needs 65 positions .* 64"),
        "write past the limit": (lambda m: m.inject_memory(rand_ids(56)), ValueError, "this write needs 65"),
        "generate past the limit": (lambda m: m.generate(rand_ids(20), max_new_tokens=12), ValueError,
                                    "generating 12 tokens needs 65"),
        "memory_rows read past the limit": (lambda m: m(rand_ids(60), memory_rows=torch.zeros(1, m.L, 4, m.d)),
                                            ValueError, "needs 65"),
        "NaN float attention mask": (lambda m: m(rand_ids(8), attention_mask=nan_mask), ValueError,
                                     r"attention_mask must hold only 0 and 1, found \[nan\]"),
        "0.5 attention mask": (lambda m: m(rand_ids(8), attention_mask=torch.full((1, 8), 0.5)), ValueError,
                               "only 0 and 1"),
        "reset_memory(0)": (lambda m: m.reset_memory(0), ValueError, "num_memories must be a positive integer"),
        "reset_memory(True)": (lambda m: m.reset_memory(True), ValueError, "positive integer"),
        "reset_memory(2.0)": (lambda m: m.reset_memory(2.0), ValueError, "positive integer"),
        "expand_memories(0)": (lambda m: m.expand_memories(0), ValueError, "positive integer"),
        "model.memory.zero_()": (lambda m: m.memory.zero_(), RuntimeError, r"read-only \(zero_"),
        "model.memory[0] = 1": (lambda m: m.memory.__setitem__(0, 1.0), RuntimeError, "read-only"),
        "model.memory[0, 0].add_(1)": (lambda m: m.memory[0, 0].add_(1), RuntimeError, "read-only"),
        "model.memory += 1": (lambda m: m.memory.__iadd__(1), RuntimeError, "read-only"),
        "torch.add(out=model.memory)": (lambda m: torch.add(m.memory.clone(), 1, out=m.memory), RuntimeError,
                                        "read-only"),
        "model.memory.data.zero_()": (lambda m: m.memory.data.zero_(), RuntimeError, "read-only"),
        "model.memory.view(-1).fill_()": (lambda m: m.memory.view(-1).fill_(3), RuntimeError, "read-only"),
        "model.memory.unbind(0)[0].zero_()": (lambda m: m.memory.unbind(0)[0].zero_(), RuntimeError, "read-only"),
        "torch.nn.init.zeros_(model.memory)": (lambda m: torch.nn.init.zeros_(m.memory), RuntimeError, "read-only"),
        "model.memory.numpy()[0] = 1": (lambda m: m.memory.numpy().__setitem__(0, 1.0), ValueError, "read-only"),
        "memory_state()['memory'].zero_()": (lambda m: m.memory_state()["memory"].zero_(), RuntimeError, "read-only"),
    }


@pytest.mark.parametrize("case", list(_readonly_cases()))
def test_class6_no_silent_extrapolation_or_bypass(case):
    call, exc, match = _readonly_cases()[case]
    model = shared("short", short_model)
    before = state(model)
    with model.memory_snapshot():
        fails_cleanly(model, lambda: call(model), exc, match)
    assert_same(model, before)


def test_class6_limits_are_exact_and_warn_mode_runs():
    model = short_model()
    before = state(model)
    with torch.no_grad():
        model(rand_ids(31))                                            # 33 + 31 = 64 positions: allowed
        model.inject_memory(rand_ids(55), update_memory=False)         # 1 + 55 + 8 = 64
        model.generate(rand_ids(20), max_new_tokens=11)
    assert_same(model, before)
    warn = short_model(long_input="warn")
    with pytest.warns(UserWarning, match="needs 65 positions"):
        with torch.no_grad():
            warn(rand_ids(32))
    from memoryllm_repro.checks import position_limit
    scaled = MemoryLLM.from_base(tiny_llama(max_position_embeddings=64), num_blocks=4, num_tokens=8)
    from memoryllm_repro.backbones import linear_rope
    linear_rope(scaled.base.config, 2.0)
    assert position_limit(scaled) == 128 and position_limit(model) == 64
    assert MemoryLLM.from_base("tiny-random-llama", num_blocks=30, num_tokens=64).config.long_input == "raise"


def test_class6_snapshot_restores_and_detects_private_in_place_changes():
    model = short_model()
    before = state(model)
    view = model.memory
    assert isinstance(view.clone(), torch.Tensor) and type(view.clone()) is torch.Tensor   # a copy is plain
    view.clone().zero_()                                                 # allowed: a copy
    with model.memory_snapshot():
        model.inject_memory(rand_ids(20, seed=5))
        model.reset_memory(2)
    assert_same(model, before)
    with pytest.raises(RuntimeError, match="modified in place"):
        with model.memory_snapshot():
            model._pool.add_(1)                                          # private: detected, not silently kept


# ---------------------------------------------------------------------------------------------- 7: clear errors
def _clear_cases():
    meta = torch.empty(1, 3, 8, 64, device="meta")
    return {
        "list as attention_mask (read)": (lambda m: m(rand_ids(8), attention_mask=[[1] * 8]), TypeError,
                                          "attention_mask must be a torch.Tensor, got list"),
        "list as attention_mask (write)": (lambda m: m.inject_memory(rand_ids(20), attention_mask=[[1] * 20]),
                                           TypeError, "attention_mask must be a torch.Tensor"),
        "list as input_ids": (lambda m: m.inject_memory([[5] * 20]), TypeError, "input_ids must be a torch.Tensor"),
        "int memory_rows": (lambda m: m(rand_ids(8), memory_rows=torch.zeros(1, m.L, 4, m.d, dtype=torch.long)),
                            TypeError, "memory_rows must be a floating-point tensor"),
        "delta on the meta device": (lambda m: m.write_memory(meta), ValueError, "delta is on the meta device"),
        "set_memory on the meta device": (lambda m: m.set_memory(torch.empty(3, 32, 64, device="meta")),
                                          ValueError, "memory is on the meta device"),
        "list as delta": (lambda m: m.write_memory([[0.0]]), TypeError, "delta must be a torch.Tensor, got list"),
        "load_memory(<a directory>)": (lambda m: m.load_memory(Path(__file__).parent), IsADirectoryError,
                                       "is a directory"),
        "reset_memory(-1)": (lambda m: m.reset_memory(-1), ValueError, "num_memories must be a positive integer"),
        "set_memory initialized='yes'": (lambda m: m.set_memory(torch.zeros(3, 32, 64), initialized="yes"),
                                         ValueError, "initialized must be"),
    }


@pytest.mark.parametrize("case", list(_clear_cases()))
def test_class7_errors_name_the_problem(case):
    call, exc, match = _clear_cases()[case]
    model = shared("short", short_model)
    fails_cleanly(model, lambda: call(model), exc, match)


def test_class7_float64_memory_rows_are_cast_not_an_error():
    model = short_model()
    rows = torch.randn(1, model.L, model.K, model.d, dtype=torch.float64)
    before = state(model)
    with torch.no_grad():
        a = model.inject_memory(rand_ids(20), update_memory=False, memory_rows=rows)
        b = model.inject_memory(rand_ids(20), update_memory=False, memory_rows=rows.float())
        assert torch.equal(a, b)
        assert torch.equal(model(rand_ids(8), memory_rows=rows).logits, model(rand_ids(8), memory_rows=rows.float()).logits)
    assert_same(model, before)


# ---------------------------------------------------------------------------------------------- 8: atomic files
KILL_MID_SAVE = textwrap.dedent("""
    import os, signal, sys, torch
    from safetensors.torch import save_file as real
    from memoryllm_repro import persistence
    def half_then_die(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        with open(path, "r+b") as f:               # as if the kill landed mid-write
            f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    persistence.save_file = half_then_die
    persistence.save_tensors({"x": torch.zeros(1000)}, sys.argv[1])
""")


def test_class8_a_save_killed_mid_write_leaves_the_old_file_and_the_next_save_cleans_up(tmp_path):
    target = tmp_path / "memory.safetensors"
    persistence.save_tensors({"x": torch.ones(10)}, target)
    res = subprocess.run([sys.executable, "-c", KILL_MID_SAVE, str(target)], cwd=REPO, capture_output=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert torch.equal(read(target)[0]["x"], torch.ones(10))          # the old file, intact
    orphans = list(tmp_path.glob(".memory.safetensors.*.tmp"))
    assert len(orphans) == 1                                           # what the kill left behind
    (tmp_path / ".notes.tmp").write_text("user file")                  # not ours: must survive
    model = filled(writes=1)
    model.save_pretrained(tmp_path, save_tokenizer=False, model_card=False)
    assert not list(tmp_path.glob(".memory.safetensors.*.tmp")) and (tmp_path / ".notes.tmp").exists()
    model.load_memory(target)


@pytest.mark.parametrize("writer", ["save_tensors", "write_text", "results.write_run"])
def test_class8_a_failing_write_never_touches_the_target(writer, tmp_path, monkeypatch):
    from memoryllm_repro import results
    target = tmp_path / ("records.csv" if writer == "results.write_run" else "f")
    target.write_text("old")
    seen = []

    def boom(*a, **k):
        seen.append(a[1] if len(a) > 1 else a[0])
        with open(seen[-1], "w") as f:
            f.write("half")
        raise OSError("disk full")
    if writer == "save_tensors":
        monkeypatch.setattr(persistence, "save_file", boom)
        call = lambda: persistence.save_tensors({"x": torch.zeros(2)}, target)  # noqa: E731
    elif writer == "write_text":
        monkeypatch.setattr(Path, "write_text", lambda self, text: boom(None, self))
        call = lambda: persistence.write_text(target, "new")  # noqa: E731
    else:
        import pandas as pd
        monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, p, **k: boom(None, p))
        call = lambda: results.write_run(tmp_path, [{"a": 1}], {})  # noqa: E731
    with pytest.raises(OSError, match="disk full"):
        call()
    assert target.read_text() == "old" and Path(seen[0]) != target
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------- 4: SIGKILL
def test_class4_sigkill_during_a_checkpoint_save_resumes_every_step_once(tmp_path):
    """A real training process killed with SIGKILL while `step-N.tmp` exists (inside a save) restarts, and every
    step is logged exactly once in log.jsonl and val.jsonl."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "memoryllm_repro.train", "--model.backbone", "tiny-random-llama",
            "--model.num_blocks", "4", "--model.num_tokens", "16", "--save_every", "1", "--eval_every", "1",
            "--eval_examples", "1", "--eval_updates", "1", "--min_len", "24", "--max_len", "48", "--threads", "1",
            "--out_dir", str(out)]
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    landed, t0 = None, time.time()
    for attempt in range(4):
        proc = subprocess.Popen(args + ["--steps", "100000"], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(tmp_path / f"err{attempt}.txt", "w"))
        deadline = time.time() + 40
        while time.time() < deadline and proc.poll() is None:
            tmps = list((out / "checkpoints").glob("step-*.tmp")) if (out / "checkpoints").is_dir() else []
            if tmps and len(persistence.snapshots(out)) >= 1:    # inside a save, with a snapshot to resume from
                proc.send_signal(signal.SIGKILL)
                landed = tmps[0].name
                break
            time.sleep(0.002)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, (tmp_path / f"err{attempt}.txt").read_text()[-2000:]
        if landed and (out / "checkpoints" / landed).exists():
            break
        landed = None
    assert landed, "never caught the process inside a checkpoint save"
    last = int(persistence.snapshots(out)[-1].name[5:])
    res = subprocess.run(args + ["--steps", str(last + 2)], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    n = last + 2
    assert _steps(out / "log.jsonl") == list(range(1, n + 1))
    assert _steps(out / "val.jsonl") == list(range(1, n + 1))
    assert not list((out / "checkpoints").glob("*.tmp"))
    assert time.time() - t0 < 150
