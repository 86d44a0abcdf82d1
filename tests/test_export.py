"""A training run exported as a shippable checkpoint: small, no pool inside, warm pool rebuilt on load."""
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
