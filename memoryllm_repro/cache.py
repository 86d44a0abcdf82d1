"""Key/value caches for reading the memory pool, and the attention function our layer loops run.

* `PoolKV` - the projected keys/values of `[bos_l; θ_l]` for every layer, kept across questions and updated
  incrementally after each write (only the K new vectors are projected; survivors are gathered, then all keys are
  re-rotated on the next read because their slot index, hence their RoPE position, changed). The official code
  re-projects the whole pool for every `generate` call; this is the main speed lever over it. Each layer's
  rotated keys and values sit in a buffer with spare rows after the prefix: a generation call *leases* those rows
  for its own tokens, so a read never copies the prefix (a copy per call, or per token, is O(N) work that a plain
  answer does not do).
* `MemoryCache` - a transformers `Cache` for one generation call, whose layers start with the memory prefix (leased
  in place, or copied when the lease is taken or the batch has more questions than memories) and grow in place.
  `get_seq_length()` counts only real tokens, so HF `generate` never sees the prefix.
* `gqa_attention` - while our layer loops run (no grad, CPU), SDPA handles grouped-query heads itself: HF's sdpa
  path repeats every key/value head for each query head of its group whenever a mask is given, i.e. at every
  prefill, a 3x copy of the memory prefix per layer for SmolLM2.
"""
from __future__ import annotations

import contextlib
import inspect
import weakref

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, rotate_half


# transformers 5.24 renamed `past_key_values` to `cache` (model inputs and outputs, decoder layers); the old name is
# only deprecated there. We pass whichever name the installed Llama layers take, so both lines of versions work.
CACHE_KW = "cache" if "cache" in inspect.signature(LlamaDecoderLayer.forward).parameters else "past_key_values"

class PrefixLayer(DynamicLayer):
    """One layer's cache: `prefix_len` memory rows followed by the real tokens, in buffers [B, h, rows, hd] with
    spare rows after them (leased from a PoolKV, or owned)."""

    def __init__(self, kbuf: torch.Tensor, vbuf: torch.Tensor, prefix_len: int):
        super().__init__()
        self.prefix_len = prefix_len
        self.dtype, self.device = kbuf.dtype, kbuf.device
        self.is_initialized = True
        self._kbuf, self._vbuf = kbuf, vbuf
        self.keys, self.values = kbuf[:, :, :prefix_len], vbuf[:, :, :prefix_len]

    @classmethod
    def copied(cls, keys: torch.Tensor, values: torch.Tensor, extra: int) -> "PrefixLayer":
        return cls(*_with_room(keys, values, extra), keys.shape[-2])

    def _owns_views(self) -> bool:
        # beam search / crop / batch selection may replace self.keys with a fresh tensor: then re-buffer.
        return (self.keys.data_ptr() == self._kbuf.data_ptr() and self.keys.stride() == self._kbuf.stride()
                and self.values.data_ptr() == self._vbuf.data_ptr() and self.keys.shape[0] == self._kbuf.shape[0])

    def update(self, key_states, value_states, *args, **kwargs):
        t, new = self.keys.shape[-2], key_states.shape[-2]
        if not self._owns_views() or t + new > self._kbuf.shape[-2]:
            self._kbuf, self._vbuf = _with_room(self.keys, self.values, max(t, 64) + new)   # amortized doubling
        self._kbuf[:, :, t:t + new] = key_states
        self._vbuf[:, :, t:t + new] = value_states
        self.keys, self.values = self._kbuf[:, :, :t + new], self._vbuf[:, :, :t + new]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.keys.shape[-2] - self.prefix_len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[-2] + query_length, 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:   # HF's legacy meaning: keep this many real tokens
            tokens_to_remove = tokens_to_remove - self.get_seq_length()
        if tokens_to_remove < 0:
            keep = self.keys.shape[-2] + tokens_to_remove
            self.keys, self.values = self.keys[..., :keep, :], self.values[..., :keep, :]


def _with_room(keys, values, extra):
    b, h, t, d = keys.shape
    kbuf, vbuf = keys.new_empty(b, h, t + extra, d), values.new_empty(b, h, t + extra, values.shape[-1])
    kbuf[:, :, :t] = keys
    vbuf[:, :, :t] = values
    return kbuf, vbuf


class MemoryCache(Cache):
    """Cache for one `generate` call. Empty until the model's first forward fills it with the memory prefix.
    `room`: tokens the call will add (prompt + new tokens), so the buffers never grow during decoding."""

    def __init__(self, room: int = 64):
        super().__init__(layers=[])
        self.room = room

    @property
    def is_primed(self) -> bool:
        return len(self.layers) > 0

    @property
    def prefix_len(self) -> int:
        """Position offset of the real tokens: the longest layer prefix (layers without memory have none)."""
        return max(layer.prefix_len for layer in self.layers) if self.layers else 0

    def prime(self, prefix: list[tuple[torch.Tensor, torch.Tensor]], pool_kv: "PoolKV | None" = None) -> None:
        """Start every layer with its prefix: the PoolKV's own buffers when it lends them (no copy), else copies."""
        bufs = pool_kv.lease(self, prefix[0][0].shape[0], self.room) if pool_kv is not None else None
        if bufs is not None:
            self.layers = [PrefixLayer(k, v, pool_kv.T) for k, v in bufs]
        else:
            self.layers = [PrefixLayer.copied(k, v, self.room) for k, v in prefix]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].get_seq_length() if self.layers else 0


class PrefixOnly:
    """Duck-typed cache for a single forward: prepends a fixed prefix to each layer's keys/values, stores nothing.
    Keeps autograd intact (plain torch.cat), which training needs."""

    def __init__(self, prefix: list[tuple[torch.Tensor, torch.Tensor]]):
        self.prefix = prefix

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        k, v = self.prefix[layer_idx]
        if k.shape[0] != key_states.shape[0]:
            k, v = k.expand(key_states.shape[0], -1, -1, -1), v.expand(key_states.shape[0], -1, -1, -1)
        return torch.cat([k, key_states], dim=-2), torch.cat([v, value_states], dim=-2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class PoolKV:
    """Projected keys/values of [bos_l; θ_l] for all layers: per layer, raw (un-rotated) keys [B, kvh, T, hd] and
    buffers [B, kvh, T + room, hd] for the values and the rotated keys (derived lazily on the first read). A write
    updates them in place (`update_`) unless someone else sees them - an alias handed out by the model (a memory
    snapshot) or a live generation call leasing the spare rows - then it builds new ones (`after_write`).
    `key` identifies the pool and weights it came from."""

    def __init__(self, key, raw_k: list[torch.Tensor], v: list[torch.Tensor]):
        """`v[l]`: value buffers whose first T rows are filled (see `project`/`after_write`)."""
        self.key, self.raw_k, self.v = key, raw_k, v
        self.T = raw_k[0].shape[-2]
        self.k: list[torch.Tensor] | None = None
        self.k_stale = False           # the k buffers exist but hold the rotation of an older pool
        self._lease = [None]           # weak reference to the cache using the spare rows (shared with aliases)

    def alias(self) -> "PoolKV":
        """Another handle on the same buffers (what the model hands out; see `Handed`)."""
        other = PoolKV(self.key, list(self.raw_k), list(self.v))
        other.k = None if self.k is None or self.k_stale else list(self.k)
        other._lease = self._lease
        return other

    def leased(self) -> bool:
        return self._lease[0] is not None and self._lease[0]() is not None

    def write(self, key, keep, new_k, new_v, skip: int, in_place: bool) -> "PoolKV":
        """After a write: this PoolKV updated in place, or (someone else sees its buffers) a new one."""
        if not in_place or self.leased():
            return self.after_write(key, keep, new_k, new_v, skip)
        self.update_(key, keep, new_k, new_v, skip)
        return self

    def update_(self, key, keep: torch.Tensor, new_k: list[torch.Tensor], new_v: list[torch.Tensor],
                skip: int) -> None:
        """`after_write` in place: the same buffers, survivors moved up, new rows appended; keys re-rotated on the
        next read into the same k buffers."""
        for l, (rk, v, nk, nv) in enumerate(zip(self.raw_k, self.v, new_k, new_v)):
            compact_(rk, keep[:, l], nk, skip)
            compact_(v[..., :self.T, :], keep[:, l], nv, skip)
        self.key, self.k_stale = key, self.k is not None

    @classmethod
    def build(cls, key, raw_k: list[torch.Tensor], v: list[torch.Tensor], room: int = 64) -> "PoolKV":
        bufs = []
        for i, x in enumerate(v):
            buf = x.new_empty(*x.shape[:-2], x.shape[-2] + room, x.shape[-1])
            buf[..., :x.shape[-2], :] = x
            bufs.append(buf)
            v[i] = None         # freed as we go: the projections and the buffers are never both whole in memory
        return cls(key, raw_k, bufs)

    @property
    def room(self) -> int:
        return self.v[0].shape[-2] - self.T

    def after_write(self, key, keep: torch.Tensor, new_k: list[torch.Tensor], new_v: list[torch.Tensor],
                    skip: int) -> "PoolKV":
        """The PoolKV of the pool after a write: per layer l, the first `skip` rows (BOS), the survivors
        keep[:, l] of the rest in order, then the new rows new_k[l] / new_v[l] [B, kvh, K, hd]. Only the K new
        vectors were projected; the rest is gathered, straight into the new buffers."""
        raw, vs = [], []
        for l, (rk, v, nk, nv) in enumerate(zip(self.raw_k, self.v, new_k, new_v)):
            raw.append(drop_and_append(rk, keep[:, l], nk, skip))
            vs.append(drop_and_append(v[..., :self.T, :], keep[:, l], nv, skip, room=self.room))
        return PoolKV(key, raw, vs)

    def prefix(self, rope) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (rotated k, v) views [B, kvh, T, hd]; `rope(positions, like)` gives cos/sin for slots 0..T-1."""
        if self.k is None or self.k_stale:
            cos, sin = rope(torch.arange(self.T, device=self.raw_k[0].device), self.raw_k[0])
            bufs = self.k if self.k is not None and not self.leased() else [torch.empty_like(v) for v in self.v]
            for raw, buf in zip(self.raw_k, bufs):
                torch.add(raw * cos, rotate_half(raw) * sin, out=buf[..., :self.T, :])
            self.k, self.k_stale = bufs, False
        return [(k[..., :self.T, :], v[..., :self.T, :]) for k, v in zip(self.k, self.v)]

    def lease(self, cache, B: int, room: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Lend the per-layer (k, v) buffers to `cache`, which writes its tokens after the prefix rows. None when
        another live cache holds them (a caller kept a cache from an earlier call), or the batch has more questions
        than memories: the caller copies instead. Grows the spare rows once if the call needs more."""
        held = self._lease[0]() if self._lease[0] is not None else None
        if self.k is None or self.k_stale or (held is not None and held is not cache) or self.v[0].shape[0] != B:
            return None
        if room > self.room:
            grow = max(room, 2 * self.room)
            self.k = [_regrow(x, self.T, grow) for x in self.k]
            self.v = [_regrow(x, self.T, grow) for x in self.v]
        self._lease[0] = weakref.ref(cache)
        return list(zip(self.k, self.v))


class PoolHandles:
    """The model's pool and its cached keys/values as others see them (mixed into MemoryLLM)."""

    @property
    def _pool(self) -> torch.Tensor:
        """The pool [B, L, N, d], stored in `_slots` and its keys/values in `_kvc`. Writes update both in place (a
        fresh 0.1-0.5 GB tensor per write costs more in page faults than the gather itself, and doubles the peak
        memory), so what is handed out here and by `_pool_kv` is tracked: while a handle is alive (a snapshot, a
        kept `memory` view) the write leaves the old buffers untouched and fills new ones (copy-on-write)."""
        return self._pool_handed.give(self._slots.detach())

    @_pool.setter
    def _pool(self, value: torch.Tensor) -> None:
        self._slots = value.detach()
        self._pool_handed.reset(value)          # the caller may keep `value`: then it is never written into

    @property
    def _pool_kv(self) -> PoolKV | None:
        return None if self._kvc is None else self._kv_handed.give(self._kvc.alias())

    @_pool_kv.setter
    def _pool_kv(self, value: PoolKV | None) -> None:
        self._kvc = None if value is None else value.alias()
        self._kv_handed.reset(value)

    def _pool_key(self):   # the pool's content: its storage and in-place version counter
        return self._slots.data_ptr(), self._slots._version


def _regrow(buf: torch.Tensor, T: int, room: int) -> torch.Tensor:
    out = buf.new_empty(*buf.shape[:-2], T + room, buf.shape[-1])
    out[..., :T, :] = buf[..., :T, :]
    return out


def compact_(buf: torch.Tensor, keep: torch.Tensor, fresh: torch.Tensor, skip: int = 0) -> None:
    """`drop_and_append` in place, per batch row: the survivors go through a temporary of one row's size (small
    enough to stay in cache and to be recycled by the allocator), then back, then fresh after them."""
    M = keep.shape[-1]
    for b in range(buf.shape[0]):
        x = buf[b]
        x[..., skip:skip + M, :] = x[..., skip:, :].index_select(x.ndim - 2, keep[b])
        x[..., skip + M:skip + M + fresh.shape[-2], :] = fresh[b]


class Handed:
    """The handles to a buffer that its owner gave out (weak references): while one is alive, the owner must not
    write into the buffer (copy-on-write). Handles are cheap aliases (a `detach()`ed tensor, `PoolKV.alias`), so
    a handle that was only used for a moment (a shape or dtype check) dies at once and costs nothing."""

    def __init__(self):
        self.refs: list[weakref.ref] = []

    def give(self, handle):
        if len(self.refs) > 32:
            self.refs = [r for r in self.refs if r() is not None]
        self.refs.append(weakref.ref(handle))
        return handle

    def reset(self, *outside) -> None:
        """A new buffer: only `outside` (what the caller passed in and may keep) can see it."""
        self.refs = [weakref.ref(o) for o in outside if o is not None]

    def held(self) -> bool:
        return any(r() is not None for r in self.refs)


def drop_and_append(old: torch.Tensor, keep: torch.Tensor, fresh: torch.Tensor, skip: int = 0, room: int = 0,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """[the first `skip` rows of old; its rows skip + keep; fresh] along dim -2, per batch row b, written in one
    pass into `out` (or a new tensor with `room` spare rows): a gather then a cat would copy everything twice.
    `out` = old: in place (`compact_`).
    old [B, ..., T, D]; keep [B, M] sorted indices into old's rows after `skip`; fresh [B, ..., F, D]."""
    B, M, Fr = old.shape[0], keep.shape[-1], fresh.shape[-2]
    if out is not None and out.data_ptr() == old.data_ptr():
        compact_(old, keep, fresh, skip)
        return old
    if out is None:
        out = old.new_empty(*old.shape[:-2], skip + M + Fr + room, old.shape[-1])
    for b in range(B):
        src, dst = old[b], out[b]
        if skip:
            dst[..., :skip, :] = src[..., :skip, :]
        torch.index_select(src[..., skip:, :], src.ndim - 2, keep[b], out=dst[..., skip:skip + M, :])
        dst[..., skip + M:skip + M + Fr, :] = fresh[b]
    return out


# ---------------------------------------------------------------------------------------------- attention
_GQA_SDPA = "memoryllm_gqa_sdpa"


def _gqa_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """HF's attention-function signature; CPU: one SDPA call on the key/value heads as they are (a single query
    is packed as g queries per key/value head), elsewhere HF's sdpa (CUDA kernels want no mask for native GQA)."""
    B, H, q, hd = query.shape
    g = H // key.shape[1]
    if query.device.type != "cpu" or g == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if q == 1:
        out = F.scaled_dot_product_attention(query.reshape(B, H // g, g, hd), key, value, attn_mask=attention_mask,
                                             dropout_p=dropout, scale=scaling).reshape(B, H, 1, hd)
    else:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                             scale=scaling, is_causal=attention_mask is None, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(_GQA_SDPA, _gqa_sdpa)


@contextlib.contextmanager
def gqa_attention(config):
    """Run the enclosed layer calls with `_gqa_sdpa` when the backbone uses sdpa and no gradient is recorded (the
    layers read the implementation from their shared config at each call; restored on exit)."""
    old = config._attn_implementation
    if old != "sdpa" or torch.is_grad_enabled():
        yield
        return
    config._attn_implementation = _GQA_SDPA
    try:
        yield
    finally:
        config._attn_implementation = old


def random_subset(B: int, L: int, N: int, keep: int, generator: torch.Generator) -> torch.Tensor:
    """[B, L, keep] sorted indices: a uniform subset of range(N) without replacement, independent per (b, l): the
    `keep` smallest of N draws, found in O(N) by a threshold (= argsort(draws)[:keep] sorted; a tie falls back)."""
    r = torch.rand(B, L, N, generator=generator)
    below = r <= r.kthvalue(keep, -1, keepdim=True).values
    if bool((below.sum(-1) == keep).all()):
        return below.nonzero()[:, -1].view(B, L, keep)
    return r.argsort(-1)[..., :keep].sort(-1).values
