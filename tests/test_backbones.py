"""Backbone loading from a local HF folder (the same code path as a hub id), RoPE scaling, architecture checks."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from memoryllm_repro import MemoryLLM, load_backbone, tiny_llama


def test_local_folder_and_linear_rope(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "llama")
    plain = load_backbone(str(tmp_path / "llama"))
    scaled = load_backbone(str(tmp_path / "llama"), rope_factor=2.0)
    x = torch.zeros(1, 1, 8)
    cos1, _ = plain.model.rotary_emb(x, torch.tensor([[3]]))
    cos2, _ = scaled.model.rotary_emb(x, torch.tensor([[6]]))
    assert torch.allclose(cos1, cos2, atol=1e-6)          # linear interpolation: position 6 acts as 3
    m = MemoryLLM.from_base(str(tmp_path / "llama"), num_blocks=2, num_tokens=4, rope_factor=2.0)
    m.save_pretrained(tmp_path / "ckpt", save_tokenizer=False)
    again = MemoryLLM.from_pretrained(tmp_path / "ckpt")
    assert again.base.config.rope_parameters["factor"] == 2.0


def test_non_llama_backbone_is_refused():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(ValueError, match="Llama-family"):
        MemoryLLM.from_base(gpt2)
