import os

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def make_model(num_blocks=4, num_tokens=8, dtype=torch.float64, seed=0, attn="sdpa", **cfg):
    """Tiny random MemoryLLM in float64 with non-trivial learned vectors, so every path is exercised."""
    from memoryllm_repro import MemoryLLM, tiny_llama
    base = tiny_llama(seed=seed, attn_implementation=attn).to(dtype)
    model = MemoryLLM.from_base(base, num_blocks=num_blocks, num_tokens=num_tokens, seed=seed, **cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.new_memory_positional_emb.copy_(torch.randn(model.new_memory_positional_emb.shape, generator=g) * 0.5)
    return model


def rand_ids(n, b=1, seed=0, vocab=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (b, n), generator=g)


@pytest.fixture
def model():
    return make_model()
