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


# ---------------------------------------------------------------- writes in place, copy-on-write
def test_writes_go_in_place_when_nobody_else_sees_the_pool():
    model = filled()
    with torch.no_grad():
        model(rand_ids(5))                                          # builds the cached keys/values
    ptr, kv_ptr = model._slots.data_ptr(), model._kvc.raw_k[0].data_ptr()
    model.inject_memory(rand_ids(20, seed=30))
    assert model._slots.data_ptr() == ptr and model._kvc.raw_k[0].data_ptr() == kv_ptr and model.kv_cached


def test_in_place_and_copy_on_write_give_the_same_pool_and_reads():
    a, b = filled(), filled()
    ids = rand_ids(7, seed=9)
    with torch.no_grad():
        a(ids), b(ids)
    for step in range(3):
        held = (b.memory, b._pool_kv)                               # b keeps handles: its writes copy
        for m in (a, b):
            m.inject_memory(rand_ids(20, seed=40 + step))
        assert held[0].data_ptr() != b._slots.data_ptr()
    assert torch.equal(a.memory, b.memory)
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def test_snapshot_restores_pool_and_cache_bit_for_bit():
    model = filled()
    ids = rand_ids(7, seed=9)
    with torch.no_grad():
        before_logits = model(ids).logits
    pool, rows = model.memory.clone(), prefix_rows(model)
    with model.memory_snapshot():
        for i in range(3):
            model.inject_memory(rand_ids(20, seed=60 + i))
            model.generate(ids, max_new_tokens=3, eos_token_id=None)
        assert not torch.equal(model.memory, pool)
    assert torch.equal(model.memory, pool)
    with torch.no_grad():
        after_logits = model(ids).logits
    for (k0, v0), (k1, v1) in zip(rows, prefix_rows(model)):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)
    assert torch.equal(before_logits, after_logits)


def test_a_kept_memory_view_does_not_change():
    model = filled()
    view = model.memory
    copy = view.clone()
    model.inject_memory(rand_ids(20, seed=70))
    assert torch.equal(view, copy) and not torch.equal(model.memory, copy)


def test_survivor_draw_equals_the_sort():
    from memoryllm_repro.cache import random_subset
    for seed in range(20):
        for N, keep in ((32, 24), (640, 576), (50, 50)):
            g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            want = torch.rand(2, 3, N, generator=g1).argsort(-1)[..., :keep].sort(-1).values
            assert torch.equal(random_subset(2, 3, N, keep, g2), want)
