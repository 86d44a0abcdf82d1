"""The authors' checkpoint format (issue 10): a tiny checkpoint written the way theirs is, loaded and converted."""
import json

import torch
from safetensors.torch import save_file

from conftest import make_model, rand_ids
from reference import read_logits
from memoryllm_repro import MemoryLLM


def write_official(model, folder, rope=None):
    """Their layout: Llama config + memory fields; HF Llama weight names + memory/bos/e_new/initialized."""
    folder.mkdir()
    cfg = model.base.config.to_dict()
    for k in ("rope_parameters", "dtype", "transformers_version", "architectures"):
        cfg.pop(k, None)
    cfg.update(model_type="memoryllm", architectures=["MemoryLLM"], num_blocks=model.config.num_blocks,
               num_tokens=model.config.num_tokens, add_bos_embedding=True, rope_theta=10000.0)
    if rope:
        cfg["rope_scaling"] = rope
    (folder / "config.json").write_text(json.dumps(cfg))
    sd = {k: v.contiguous() for k, v in model.base.state_dict().items()}
    sd.update(memory=model.memory.contiguous(), bos_embedding=model.bos_embedding.detach().contiguous(),
              new_memory_positional_emb=model.new_memory_positional_emb.detach().contiguous(),
              initialized=torch.tensor(1, dtype=torch.uint8))
    half = len(sd) // 2     # sharded, with an index, as big checkpoints are
    keys = list(sd)
    save_file({k: sd[k] for k in keys[:half]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k] for k in keys[half:]}, str(folder / "model-00002-of-00002.safetensors"))
    wm = {k: ("model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.safetensors")
          for i, k in enumerate(keys)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))


def test_official_format_loads_and_reads_identically(tmp_path):
    src = make_model(dtype=torch.float32)
    for i in range(3):
        src.inject_memory(rand_ids(20, seed=i))
    write_official(src, tmp_path / "official")
    model = MemoryLLM.from_pretrained(tmp_path / "official")
    assert torch.equal(model.memory, src.memory) and model.initialized
    assert (model.N, model.K) == (src.N, src.K)
    ids = rand_ids(7, seed=3)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits[0], read_logits(src, ids[0]), atol=1e-4)
        d1 = model.inject_memory(rand_ids(12, seed=9), update_memory=False)
        d2 = src.inject_memory(rand_ids(12, seed=9), update_memory=False)
    assert torch.allclose(d1, d2, atol=1e-5)
    model.save_pretrained(tmp_path / "converted", save_tokenizer=False)        # converted to our format
    again = MemoryLLM.from_pretrained(tmp_path / "converted")
    assert torch.equal(again.memory, model.memory)


def test_official_rope_scaling_is_applied(tmp_path):
    src = make_model(dtype=torch.float32)
    src.inject_memory(rand_ids(20))
    write_official(src, tmp_path / "official", rope={"type": "linear", "factor": 2.0})
    model = MemoryLLM.from_pretrained(tmp_path / "official")
    assert model.base.config.rope_parameters["factor"] == 2.0 and model.config.rope_factor == 2.0
