"""Core MemoryLLM invariants on a tiny random Llama (float64, fast)."""
import warnings

import pytest
import torch

from conftest import make_model, rand_ids
from reference import read_logits, write_delta
from memoryllm_repro import MemoryLLM

warnings.filterwarnings("ignore", message="context of")


def fill(model, writes=3, n=20, seed=0):
    for i in range(writes):
        model.inject_memory(rand_ids(n, seed=seed + i))


# ---------------------------------------------------------------- parity with the plain backbone
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_empty_memory_equals_backbone(attn):
    model = make_model(attn=attn)
    ids = rand_ids(12, b=2)
    with torch.no_grad():
        ref = model.base(ids).logits
        assert torch.allclose(model(ids).logits, ref, atol=1e-10)
        fill(model)
        assert torch.allclose(model(ids, use_memory=False).logits, ref, atol=1e-10)
    got = model.generate(ids[:1], max_new_tokens=8, use_memory=False, eos_token_id=None)
    want = model.base.generate(ids[:1], max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=2)
    assert torch.equal(got, want)


# ---------------------------------------------------------------- read and write against the naive reference
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_read_matches_naive_reference(attn):
    model = make_model(attn=attn)
    fill(model, writes=3)
    ids = rand_ids(7, seed=9)
    with torch.no_grad():
        got = model(ids).logits[0]
        want = read_logits(model, ids[0])
    # float64 everywhere except RoPE angles, which HF computes in fp32: ulp-level differences of the vectorized
    # cos/sin give ~1e-8 here; a structural error (wrong position, mask or prefix row) gives ~1e-2.
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


@pytest.mark.parametrize("n", [3, 8, 20])   # n < K, n == K, n > K (K = 8)
def test_write_matches_naive_reference(n):
    model = make_model()
    fill(model, writes=2, n=11)
    ids = rand_ids(n, seed=5)
    with torch.no_grad():
        got = model.inject_memory(ids, update_memory=False)[0]
        want = write_delta(model, ids[0])
    assert got.shape == (model.L, model.K, model.d)
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


def test_first_write_tiles_plain_pass():
    model = make_model()
    ids = rand_ids(5)
    with torch.no_grad():
        hs = model.base.model(ids, output_hidden_states=True).hidden_states
        model.inject_memory(ids)
    # a plain pass: layer l's output is hidden_states[l+1] (the last one is normed by HF, so skip it); its last
    # min(n, K) = 5 rows are tiled over N = 32 slots: 6 full copies, then the last 32 mod 5 = 2 rows
    for l in range(model.L - 1):
        d = hs[l + 1][0, -5:]
        assert torch.allclose(model.memory[l], torch.cat([d.repeat(6, 1), d[-2:]]), atol=1e-10)
    assert model.memory.shape == (model.L, model.N, model.d)


# ---------------------------------------------------------------- pool invariants
def test_pool_invariants_after_writes():
    model = make_model()
    fill(model, writes=1)
    model.set_memory(torch.randn_like(model.memory))   # distinct rows, so survivors can be matched by value
    for step in range(6):
        old = model.memory.clone()
        delta = model.inject_memory(rand_ids(13, seed=100 + step))[0]
        new = model.memory
        N, K = model.N, model.K
        assert new.shape == (model.L, N, model.d)
        assert torch.equal(new[:, -K:], delta)                       # newest K at the end
        kept_sets = []
        for l in range(model.L):
            # survivors are old rows in their old relative order: match each to its old index
            idx = [int(((old[l] - row).abs().sum(-1) == 0).nonzero()[0]) for row in new[l, :N - K]]
            assert len(set(idx)) == N - K and idx == sorted(idx)
            kept_sets.append(tuple(idx))
            # exactly K slots are new: no row of the new tail is an old row
            assert all(((old[l] - row).abs().sum(-1) != 0).all() for row in new[l, -K:])
        assert len(set(kept_sets)) > 1                                # drops differ between layers


def test_shared_drops_when_not_per_layer():
    model = make_model(drop_memory_per_layer=False)
    keep = model.draw_survivors(1)
    assert all(torch.equal(keep[0, 0], keep[0, l]) for l in range(model.L))


def test_same_seed_same_pool_bit_for_bit():
    pools = []
    for _ in range(2):
        model = make_model(seed=3)
        fill(model, writes=5)
        pools.append(model.memory.clone())
    assert torch.equal(pools[0], pools[1])
    other = make_model(seed=3)
    other.seed(4)
    fill(other, writes=5)
    assert not torch.equal(other.memory, pools[0])


# ---------------------------------------------------------------- incremental key/value cache
def test_incremental_cache_equals_recompute():
    model = make_model()
    ids = rand_ids(6, seed=42)
    fill(model, writes=1)
    with torch.no_grad():
        model(ids)                                  # builds the cache
        for step in range(4):
            model.inject_memory(rand_ids(10, seed=step))
            assert model.kv_cached       # updated incrementally, not dropped
            cached = model(ids).logits
            model.clear_cache()
            fresh = model(ids).logits
            assert torch.allclose(cached, fresh, atol=1e-10)


def test_cache_invalidated_by_weight_change():
    model = make_model()
    fill(model)
    ids = rand_ids(6)
    with torch.no_grad():
        before = model(ids).logits
        model.layers[0].self_attn.k_proj.weight.add_(0.1)   # in place, like an optimizer step
        after = model(ids).logits
        model.clear_cache()
        assert torch.allclose(after, model(ids).logits, atol=1e-10)
    assert not torch.allclose(before, after)


# ---------------------------------------------------------------- generation
def test_generate_matches_step_by_step_greedy():
    model = make_model()
    fill(model)
    ids = rand_ids(9, seed=7)
    got = model.generate(ids, max_new_tokens=6, eos_token_id=None)
    seq = ids
    with torch.no_grad():
        for _ in range(6):
            nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(got, seq)


def test_left_padded_batch_matches_single():
    model = make_model()
    fill(model)
    a, b = rand_ids(5, seed=1), rand_ids(9, seed=2)
    batch = torch.cat([torch.cat([torch.full((1, 4), 2), a], 1), b])
    mask = torch.ones_like(batch)
    mask[0, :4] = 0
    got = model.generate(batch, attention_mask=mask, max_new_tokens=5, eos_token_id=None)
    for row, single in ((0, a), (1, b)):
        want = model.generate(single, max_new_tokens=5, eos_token_id=None)
        assert torch.equal(got[row, -5:], want[0, -5:])


def test_independent_memories_batch():
    model = make_model()
    fill(model)
    twin = make_model()
    fill(twin)
    model.expand_memories(2)
    ctx = torch.cat([rand_ids(12, seed=20), rand_ids(12, seed=21)])
    model.inject_memory(ctx)
    assert model.memory.shape == (2, model.L, model.N, model.d)
    twin_delta = twin.inject_memory(ctx[1:], update_memory=False)
    assert torch.allclose(model.memory[1, :, -model.K:], twin_delta[0], atol=1e-10)
    with pytest.raises(ValueError, match="independent memories"):
        model.inject_memory(rand_ids(12, b=3))


# ---------------------------------------------------------------- persistence
def test_save_load_memory_roundtrip(tmp_path):
    model = make_model()
    fill(model)
    model.save_memory(tmp_path / "m.safetensors")
    state = model.generator.get_state()
    other = make_model()
    other.load_memory(tmp_path / "m.safetensors")
    assert torch.equal(other.memory, model.memory) and other.initialized
    assert torch.equal(other.generator.get_state(), state)
    ctx = rand_ids(10, seed=77)
    model.inject_memory(ctx)
    other.inject_memory(ctx)
    assert torch.equal(other.memory, model.memory)    # same future drops


def test_save_pretrained_roundtrip(tmp_path):
    model = make_model()
    model.add_lora(r=4)
    with torch.no_grad():
        for n, p in model.base.named_parameters():
            if "lora_B" in n:
                p.normal_()
    fill(model)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "backbone" / "model.safetensors").is_file()   # built from an object: base saved
    loaded = MemoryLLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float64)
    ids = rand_ids(8)
    with torch.no_grad():
        assert torch.equal(loaded.memory, model.memory)
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-10)
    assert loaded.config.lora["r"] == 4 and loaded.K == model.K and loaded.N == model.N


def test_snapshot_restores_pool_and_generator():
    model = make_model()
    fill(model)
    pool, gen = model.memory.clone(), model.generator.get_state()
    with model.memory_snapshot():
        fill(model, writes=3, seed=50)
        assert not torch.equal(model.memory, pool)
    assert torch.equal(model.memory, pool) and torch.equal(model.generator.get_state(), gen)
    model.reset_memory()
    assert not model.initialized and model.memory.abs().sum() == 0


# ---------------------------------------------------------------- bad input changes nothing
def _bad_calls(model, tmp_path):
    ids = rand_ids(20)
    other = make_model(num_blocks=5)
    fill(other, writes=1)
    other.save_memory(tmp_path / "other.safetensors")
    good = torch.zeros(1, model.L, model.K, model.d, dtype=model.dtype)
    nan = good.clone()
    nan[0, 0, 0, 0] = float("nan")
    return [
        (ValueError, lambda: model.inject_memory(ids[:, :0])),                                # empty
        (ValueError, lambda: model.inject_memory(ids, attention_mask=torch.zeros_like(ids))),  # all padding
        (ValueError, lambda: model.inject_memory(torch.full((1, 20), 2))),                    # only pad tokens
        (TypeError, lambda: model.inject_memory(ids.float())),                                # wrong dtype
        (ValueError, lambda: model.inject_memory(ids[0])),                                    # wrong shape
        (ValueError, lambda: model.inject_memory(ids + 1000)),                                # out of vocab
        (ValueError, lambda: model.write_memory(good[:, :, :3])),                             # delta shape
        (ValueError, lambda: model.write_memory(nan)),                                        # non-finite
        (TypeError, lambda: model.write_memory(good.long())),                                 # delta dtype
        (ValueError, lambda: model.load_memory(tmp_path / "other.safetensors")),              # other config
        (ValueError, lambda: model(ids, attention_mask=torch.ones(1, 3))),                    # mask shape
    ]


def test_bad_inputs_raise_and_change_nothing(tmp_path):
    model = make_model()
    fill(model)
    for exc, call in _bad_calls(model, tmp_path):
        pool, gen = model.memory.clone(), model.generator.get_state()
        with pytest.raises(exc):
            call()
        assert torch.equal(model.memory, pool) and torch.equal(model.generator.get_state(), gen)


def test_short_context_policy():
    model = make_model()
    with pytest.warns(UserWarning, match="shorter than min_context_tokens"):
        model.inject_memory(rand_ids(5))
    strict = make_model(short_context="raise")
    with pytest.raises(ValueError, match="min_context_tokens"):
        strict.inject_memory(rand_ids(5))
    assert not strict.initialized


def test_adapters_disabled_gives_the_backbone():
    model = make_model()
    ids = rand_ids(9)
    with torch.no_grad():
        plain = model(ids, use_memory=False).logits
        model.add_lora(r=4, lora_dropout=0.0)
        for n, p in model.base.named_parameters():
            if "lora_B" in n:
                p.normal_()
        adapted = model(ids, use_memory=False).logits
        with model.adapters_disabled():
            assert torch.allclose(model(ids, use_memory=False).logits, plain, atol=1e-10)
        assert not torch.allclose(adapted, plain)
        assert torch.allclose(model(ids, use_memory=False).logits, adapted, atol=1e-10)


def assert_generate_is_greedy_recompute(model, ids, n=4):
    """generate (cached prefix, incremental decoding) = n greedy steps each recomputing the whole sequence."""
    got = model.generate(ids, max_new_tokens=n, eos_token_id=None)
    seq = ids
    with torch.no_grad():
        for _ in range(n):
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, seq)


def test_memory_in_some_layers_only():
    """§4.7.2 structure ablation: layers outside `memory_layers` read and write no memory."""
    ids = rand_ids(7, seed=3)
    full, every, none_, half = (make_model(), make_model(memory_layers=[0, 1, 2]), make_model(memory_layers=[]),
                                make_model(memory_layers=[-1]))
    for m in (full, every, none_, half):
        fill(m, writes=2)
    with torch.no_grad():
        assert torch.allclose(full(ids).logits, every(ids).logits, atol=1e-10)
        assert torch.allclose(none_(ids).logits, none_.base(ids).logits, atol=1e-10)   # no memory anywhere
        out = half(ids).logits
        assert not torch.allclose(out, half.base(ids).logits, atol=1e-6)
        assert torch.equal(half.inject_memory(rand_ids(12), update_memory=False)[0, 0], torch.zeros(8, 64,
                                                                                                    dtype=out.dtype))
    assert_generate_is_greedy_recompute(half, ids)


def test_shared_memory_positions_ignore_the_pools_order():
    """memory_positions="shared" (our option): every memory row at one RoPE position, so a read is the same for
    any order of the slots, while with the paper's slot positions the order matters; writes are unchanged,
    training reads (memory_rows) agree with pool reads, and decoding step by step matches one forward."""
    ids = rand_ids(7, seed=3)
    slot, shared = make_model(), make_model(memory_positions="shared")
    for m in (slot, shared):
        fill(m, writes=3)
    assert torch.equal(slot.memory, shared.memory)                     # same writes, same drops
    perm = torch.randperm(slot.N, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = {n: m(ids).logits for n, m in (("slot", slot), ("shared", shared))}
        rows = shared.memory[:, perm][None].clone()                     # [L, N, d] -> [1, L, N, d]
        assert torch.allclose(shared(ids, memory_rows=rows).logits, before["shared"], atol=1e-8)
        for m in (slot, shared):
            m.set_memory(m.memory[:, perm].clone())
        assert torch.allclose(shared(ids).logits, before["shared"], atol=1e-8)
        assert not torch.allclose(slot(ids).logits, before["slot"], atol=1e-4)
        assert not torch.allclose(before["shared"], before["slot"], atol=1e-4)
    assert_generate_is_greedy_recompute(shared, ids)
    with pytest.raises(ValueError, match="memory_positions"):
        make_model(memory_positions="random")
