"""The read path's buffers: the memory prefix is lent in place to one generation call at a time, never copied per
call or changed by it; SDPA's own grouped-query attention gives what HF's repeat-heads path gives."""
import warnings

import torch

from conftest import make_model, rand_ids
from memoryllm_repro.cache import MemoryCache

warnings.filterwarnings("ignore", message="context of")


def filled(**kw):
    model = make_model(**kw)
    for i in range(3):
        model.inject_memory(rand_ids(20, seed=i))
    return model


def prefix_rows(model):
    kv = model._pool_kv
    return [(k[..., :kv.T, :].clone(), v[..., :kv.T, :].clone()) for k, v in zip(kv.k, kv.v)]


def test_generate_leases_the_prefix_in_place_and_leaves_it_unchanged():
    model = filled()
    ids = rand_ids(9, seed=7)
    model.generate(ids, max_new_tokens=2, eos_token_id=None)          # builds the cached keys/values
    before = prefix_rows(model)
    cache = MemoryCache(room=9 + 6)
    with torch.no_grad():
        model(ids, past_key_values=cache, use_cache=True)
    kv = model._pool_kv
    assert cache.layers[0]._kbuf.data_ptr() == kv.k[0].data_ptr()    # no copy of the prefix
    model.generate(ids, max_new_tokens=6, eos_token_id=None)
    for (k0, v0), (k1, v1) in zip(before, prefix_rows(model)):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)


def test_a_kept_cache_keeps_its_tokens_when_another_read_runs():
    model = filled()
    a, b = rand_ids(9, seed=7), rand_ids(5, seed=8)
    cache = MemoryCache(room=16)
    with torch.no_grad():
        out = model(a, past_key_values=cache, use_cache=True)
        model.generate(b, max_new_tokens=4, eos_token_id=None)     # the lease is held: this call copies
        nxt = out.logits[:, -1:].argmax(-1)
        step = model(nxt, past_key_values=cache, use_cache=True).logits[:, -1]
        want = model(torch.cat([a, nxt], 1)).logits[:, -1]
    assert torch.allclose(step, want, atol=1e-10)


def test_buffers_grow_for_a_long_call():
    model = filled()
    ids = rand_ids(9, seed=7)
    got = model.generate(ids, max_new_tokens=3, eos_token_id=None)
    room = model._pool_kv.room
    long = model.generate(ids, max_new_tokens=room + 20, eos_token_id=None)
    assert model._pool_kv.room >= 9 + room + 20 and torch.equal(long[:, :got.shape[1]], got)
    seq = ids
    with torch.no_grad():
        for _ in range(room + 20):
            seq = torch.cat([seq, model(seq).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(long, seq)


def test_gqa_sdpa_matches_hf_sdpa_and_restores_the_config():
    model = filled()
    ids = rand_ids(12, b=2, seed=3)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        one = model(ids[:, :1]).logits
    assert model.base.config._attn_implementation == "sdpa"
    with torch.enable_grad():                     # grad on: the layers run HF's own sdpa (repeat heads)
        hf = model(ids, attention_mask=mask).logits
        hf_one = model(ids[:, :1]).logits
    assert torch.allclose(ours, hf, atol=1e-10) and torch.allclose(one, hf_one, atol=1e-10)
