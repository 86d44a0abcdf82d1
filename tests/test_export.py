"""A training run exported as a shippable checkpoint: small, no pool inside, warm pool rebuilt on load."""
import pytest
import torch

from memoryllm_repro import MemoryLLM
from memoryllm_repro.export import export
from memoryllm_repro.train import TrainConfig, Trainer


def test_export_and_warm_load(tmp_path):
    cfg = TrainConfig(model=dict(backbone="tiny-random-llama", num_blocks=4, num_tokens=16), out_dir=str(tmp_path / "run"),
                      steps=2, eval_every=0, save_every=1, min_len=24, max_len=48, threads=1)
    tr = Trainer(cfg)
    tr.train()
    out = export(tmp_path / "run", tmp_path / "ckpt")
    files = {p.name for p in out.iterdir()}
    assert "memory.safetensors" not in files and "backbone" not in files and "training_info.json" in files
    a = MemoryLLM.from_pretrained(out)
    b = MemoryLLM.from_pretrained(out)
    assert a.initialized and torch.equal(a.memory, b.memory)          # deterministic warm-up recipe
    assert a.config.lora["r"] == 8
    trained = dict(tr.model.named_parameters())
    for n, p in a.named_parameters():
        if "lora_" in n or n == "new_memory_positional_emb":
            assert torch.allclose(p, trained[n].detach().half().float(), atol=1e-3)   # stored in fp16


def test_a_run_starts_from_an_exported_checkpoint(tmp_path):
    """init_weights: a new run starts from an exported (fp16) checkpoint's LoRA and learned vectors."""
    model = dict(backbone="tiny-random-llama", num_blocks=4, num_tokens=16)
    common = dict(model=model, steps=1, eval_every=0, save_every=1, min_len=24, max_len=48, threads=1)
    Trainer(TrainConfig(out_dir=str(tmp_path / "run"), **common)).train()
    ckpt = export(tmp_path / "run", tmp_path / "ckpt")
    tr = Trainer(TrainConfig(out_dir=str(tmp_path / "two"), init_weights=str(ckpt), **{**common, "steps": 0}))
    tr.train()
    exported = MemoryLLM.from_pretrained(ckpt)
    mine = dict(tr.model.named_parameters())
    for n, p in exported.named_parameters():
        if "lora_" in n or n == "new_memory_positional_emb":
            assert mine[n].dtype == torch.float32 and torch.equal(mine[n], p)


def test_exported_continuation_counts_the_steps_it_started_from(tmp_path):
    """A run that starts from an exported checkpoint, exported over that same folder (as the generalist replaced
    the first default): its steps plus the first checkpoint's, also when exported there twice."""
    import json

    model = dict(backbone="tiny-random-llama", num_blocks=4, num_tokens=16)
    common = dict(model=model, eval_every=0, save_every=1, min_len=24, max_len=48, threads=1)
    Trainer(TrainConfig(out_dir=str(tmp_path / "run"), steps=1, **common)).train()
    ckpt = export(tmp_path / "run", tmp_path / "ckpt")
    Trainer(TrainConfig(out_dir=str(tmp_path / "two"), init_weights=str(ckpt), steps=2, **common)).train()
    for _ in range(2):
        export(tmp_path / "two", ckpt)
        info = json.loads((ckpt / "training_info.json").read_text())
        assert info["optimizer_steps"] == 2 and info["optimizer_steps_total"] == 3
        assert info["starts_from"]["optimizer_steps"] == 1 and info["starts_from"]["run"] == str(tmp_path / "run")
    assert "Trained for 3 optimizer steps" in (ckpt / "README.md").read_text()


def test_export_averages_snapshots_of_one_run(tmp_path):
    """--average: the shipped LoRA and learned vectors are the mean of the snapshots' (then stored in fp16); a
    snapshot of a differently shaped model is refused before anything is written."""
    from memoryllm_repro.persistence import snapshots
    model = dict(backbone="tiny-random-llama", num_blocks=4, num_tokens=16)
    common = dict(eval_every=0, save_every=1, min_len=24, max_len=48, threads=1)
    Trainer(TrainConfig(model=model, out_dir=str(tmp_path / "run"), steps=3, lr=1e-2, keep_checkpoints=3, **common)).train()
    s1, s2, s3 = snapshots(tmp_path / "run")
    out = export(tmp_path / "run", tmp_path / "avg", snapshot=s3, average=[s1, s2])
    loaded = [dict(MemoryLLM.from_pretrained(s, load_memory=False).named_parameters()) for s in (s1, s2, s3)]
    changed = 0
    for n, p in MemoryLLM.from_pretrained(out).named_parameters():
        if "lora_" in n or n in ("bos_embedding", "new_memory_positional_emb"):
            mean = sum(m[n].detach() for m in loaded) / 3
            assert torch.allclose(p, mean.half().float(), atol=1e-3), n
            changed += bool((mean - loaded[2][n].detach()).abs().max() > 2e-3)   # beyond the fp16 tolerance
    assert changed > 0                                    # the snapshots differ, so the mean is not step 3's
    Trainer(TrainConfig(model={**model, "num_tokens": 8}, out_dir=str(tmp_path / "other"), steps=1, **common)).train()
    (other,) = snapshots(tmp_path / "other")
    with pytest.raises(ValueError, match="model config differs"):
        export(tmp_path / "run", tmp_path / "bad", snapshot=s3, average=[other])
    assert not (tmp_path / "bad").exists()
