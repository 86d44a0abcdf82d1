"""Hugging Face conventions: Auto classes, dtype/device arguments, the LoRA as a standard peft adapter, merging,
tokenizers for every folder we write, a model card, and no argument silently swallowed."""
import pytest
import torch
from transformers import AutoModelForCausalLM

import memoryllm_repro  # noqa: F401  (registers the Auto classes)
from conftest import rand_ids
from memoryllm_repro import MemoryLLM, load_tokenizer
from memoryllm_repro.backbones import load_backbone
from memoryllm_repro.paths import DEFAULT_CHECKPOINT
from memoryllm_repro.persistence import merged_backbone


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny trained-looking MemoryLLM (non-zero LoRA, a written pool) saved the standard way."""
    torch.manual_seed(0)
    m = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    m.add_lora(r=4, lora_dropout=0.0)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    for i in range(3):
        m.inject_memory(rand_ids(20, seed=i, vocab=49152))
    out = tmp_path_factory.mktemp("hf") / "tiny-memoryllm"
    m.save_pretrained(out)
    return out


def test_auto_class_loads_our_model_and_generates_the_same(folder):
    ours = MemoryLLM.from_pretrained(folder)
    auto = AutoModelForCausalLM.from_pretrained(folder)
    assert type(auto) is MemoryLLM
    ids = rand_ids(6, seed=9, vocab=49152)
    a = ours.generate(ids, max_new_tokens=8, do_sample=False)
    b = auto.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(a, b) and torch.equal(ours.memory, auto.memory)


@pytest.mark.parametrize("kw", [dict(torch_dtype=torch.bfloat16), dict(dtype=torch.bfloat16), dict(dtype="bfloat16")])
def test_dtype_is_honoured(folder, kw):
    m = MemoryLLM.from_pretrained(folder, **kw)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16} and m.memory.dtype == torch.bfloat16


def test_unsupported_arguments_raise(folder):
    with pytest.raises(TypeError, match="unsupported"):
        MemoryLLM.from_pretrained(folder, low_cpu_mem_usage=True)
    with pytest.raises(NotImplementedError, match="several devices"):
        MemoryLLM.from_pretrained(folder, device_map={"a": "cpu", "b": "cuda:0"})
    with pytest.raises(ValueError, match="disagree"):
        MemoryLLM.from_pretrained(folder, dtype=torch.float32, torch_dtype=torch.bfloat16)
    m = MemoryLLM.from_pretrained(folder, device_map="cpu")
    with pytest.raises(TypeError):
        m.save_pretrained(folder.parent / "x", safe_serialization=False)


def test_adapter_is_a_standard_peft_adapter_and_merges(folder):
    from peft import PeftModel
    ours = MemoryLLM.from_pretrained(folder)
    ids = rand_ids(9, seed=4, vocab=49152)
    with torch.no_grad():
        ref = ours(ids, use_memory=False).logits
        peft = PeftModel.from_pretrained(load_backbone("tiny-random-llama"), str(folder / "adapter")).eval()
        assert torch.allclose(peft(ids).logits, ref, atol=1e-5)
        merged = merged_backbone(ours)
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        assert torch.allclose(merged(ids).logits, ref, atol=1e-5)
        assert torch.allclose(ours(ids, use_memory=False).logits, ref)     # the original is untouched


def test_model_card_and_tokenizers(folder, tmp_path):
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0") and "AutoModelForCausalLM" in card
    tok = load_tokenizer(str(folder))
    assert tok("hello").input_ids == load_tokenizer("smollm2-135m")("hello").input_ids
    assert load_tokenizer(str(DEFAULT_CHECKPOINT)).vocab_size == tok.vocab_size
    bare = tmp_path / "snapshot-like"                        # a folder saved without tokenizer files
    MemoryLLM.from_pretrained(folder).save_pretrained(bare, save_tokenizer=False, model_card=False)
    assert not (bare / "tokenizer.json").exists()
    assert load_tokenizer(str(bare))("hello").input_ids == tok("hello").input_ids
