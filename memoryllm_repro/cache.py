"""Key/value caches for reading the memory pool.

Two objects live here:

* `PoolKV` - the projected keys/values of `[bos_l; θ_l]` for every layer, kept across questions and updated
  incrementally after each write (only the K new vectors are projected; survivors are gathered, then all keys are
  re-rotated because their slot index, hence their RoPE position, changed). The official code re-projects the
  whole pool for every `generate` call; this is the main speed lever over it.
* `MemoryCache` - a transformers `Cache` for one generation call, whose layers start with the memory prefix
  already inside and grow in place (no `torch.cat` of the whole prefix at every decoding step).
  `get_seq_length()` counts only real tokens, so HF `generate` never sees the prefix.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer
from transformers.models.llama.modeling_llama import rotate_half


class PrefixLayer(DynamicLayer):
    """One layer's cache: `prefix_len` memory rows followed by the real tokens, in a buffer with spare room."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, extra: int = 64):
        super().__init__()
        self.prefix_len = keys.shape[-2]
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._alloc(keys, values, extra)

    def _alloc(self, keys, values, extra):
        b, h, t, d = keys.shape
        self._kbuf = keys.new_empty(b, h, t + extra, d)
        self._vbuf = values.new_empty(b, h, t + extra, values.shape[-1])
        self._kbuf[:, :, :t] = keys
        self._vbuf[:, :, :t] = values
        self.keys, self.values = self._kbuf[:, :, :t], self._vbuf[:, :, :t]

    def _owns_views(self) -> bool:
        # beam search / crop / batch selection may replace self.keys with a fresh tensor: then re-buffer.
        return (self.keys.data_ptr() == self._kbuf.data_ptr() and self.keys.stride() == self._kbuf.stride()
                and self.values.data_ptr() == self._vbuf.data_ptr() and self.keys.shape[0] == self._kbuf.shape[0])

    def update(self, key_states, value_states, *args, **kwargs):
        t, new = self.keys.shape[-2], key_states.shape[-2]
        if not self._owns_views() or t + new > self._kbuf.shape[-2]:
            self._alloc(self.keys, self.values, max(t, 64) + new)   # amortized doubling
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


class MemoryCache(Cache):
    """Cache for one `generate` call. Empty until the model's first forward fills it with the memory prefix."""

    def __init__(self):
        super().__init__(layers=[])

    @property
    def is_primed(self) -> bool:
        return len(self.layers) > 0

    @property
    def prefix_len(self) -> int:
        """Position offset of the real tokens: the longest layer prefix (layers without memory have none)."""
        return max(layer.prefix_len for layer in self.layers) if self.layers else 0

    def prime(self, prefix: list[tuple[torch.Tensor, torch.Tensor]], extra: int = 64) -> None:
        self.layers = [PrefixLayer(k, v, extra) for k, v in prefix]

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
    """Projected keys/values of [bos_l; θ_l] for all layers: raw (un-rotated) keys and values
    [B, L, kvh, 1+N, hd]; rotated keys are derived lazily. Immutable except for that lazy field, so a
    memory snapshot can keep a reference instead of a copy. `key` identifies the pool and weights it came from."""

    def __init__(self, key, raw_k: torch.Tensor, v: torch.Tensor):
        self.key, self.raw_k, self.v, self._rot = key, raw_k, v, None

    def prefix(self, rope) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (rotated k, v); `rope(positions, like)` gives cos/sin for slot positions 0..T-1."""
        if self._rot is None:
            cos, sin = rope(torch.arange(self.raw_k.shape[-2], device=self.raw_k.device), self.raw_k)
            self._rot = self.raw_k * cos + rotate_half(self.raw_k) * sin
        return [(self._rot[:, l], self.v[:, l]) for l in range(self.raw_k.shape[1])]
