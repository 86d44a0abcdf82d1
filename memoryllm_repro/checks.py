"""Input checks for MemoryLLM's public methods. Each raises before anything changes (validate, then commit), and
each message names what is wrong. Kept apart from model.py so the model file reads as the paper.

Dtype policy: tensors handed to a method (a delta, a pool, memory rows) are cast to the model's dtype and checked
*after* the cast (an fp32 1e30 is finite but overflows fp16). Files are not cast silently: a memory file of another
dtype is refused unless the caller opts in (`load_memory(path, cast=True)`; `from_pretrained(dtype=...)` does)."""
from __future__ import annotations

import warnings

import numpy as np
import torch


def tensor(name: str, x, *, floating: bool | None = None) -> torch.Tensor:
    """A real tensor with data (not a list, not on the meta device)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"{name} is on the meta device (it holds no data)")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def ids(model, input_ids, attention_mask=None, *, write: bool = False) -> None:
    """Token ids [B, n] for a read or a write (and its attention mask); for a write also the padding and
    short-context rules."""
    tensor("input_ids", input_ids)
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"input_ids must be an integer tensor (int64), got dtype {input_ids.dtype}")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be 2-D [batch, tokens], got shape {tuple(input_ids.shape)}")
    if input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
        raise ValueError("input_ids is empty: nothing to " + ("write into memory" if write else "read"))
    vocab = model.base.config.vocab_size
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab:
        raise ValueError(f"input_ids out of vocabulary: values in [{lo}, {hi}], vocab size {vocab}")
    if attention_mask is not None:
        mask(attention_mask)
    if attention_mask is not None and write:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                             f"{tuple(input_ids.shape)}")
        if (attention_mask.sum(-1) == 0).any():
            raise ValueError("a context is all padding (attention_mask is all zeros): nothing to write")
        if not bool(attention_mask.bool().all()):
            raise ValueError("padded contexts are not supported by inject_memory: group contexts of equal "
                             "length, or write them one at a time")
    if write:
        pad = model.generation_config.pad_token_id
        if attention_mask is None and pad is not None and bool((input_ids == pad).all(-1).any()):
            raise ValueError(f"a context consists only of padding tokens (id {pad}): nothing to write")
        n, m = input_ids.shape[1], model.config.min_context_tokens
        if n < m:
            msg = (f"context of {n} tokens is shorter than min_context_tokens={m} (the authors trained with at "
                   f"least 16); retention of very short writes is poor")
            if model.config.short_context == "raise":
                raise ValueError(msg)
            warnings.warn(msg, stacklevel=3)


def mask(attention_mask) -> None:
    """A tensor mask; a float one must hold exactly 0/1: NaN or 0.5 have no meaning here, and `.bool()` would read
    them as 1. (Integer masks follow HF: non-zero attends; not scanned, to keep decoding steps sync-free.)"""
    tensor("attention_mask", attention_mask)
    if attention_mask.is_floating_point() and attention_mask.numel():
        m = attention_mask
        if not bool(((m == 0) | (m == 1)).all()):
            bad = m[(m != 0) & (m != 1)].flatten()[:3].tolist()
            raise ValueError(f"attention_mask must hold only 0 and 1, found {bad}")


def position_limit(model) -> int:
    """Positions the backbone was trained on: max_position_embeddings, times the factor of a linear (or dynamic)
    RoPE scaling (the authors' 7B: 4096 x 2 = 8192 for N + 1 = 7681 memory rows plus a chunk)."""
    c = model.base.config
    rope = getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}
    kind = rope.get("rope_type", rope.get("type"))
    factor = float(rope.get("factor") or 1.0) if kind in ("linear", "dynamic") else 1.0
    return int(c.max_position_embeddings * factor)


def positions(model, needed: int, what: str, prefix: int) -> None:
    """Guard against silent RoPE extrapolation: `needed` positions (memory prefix rows included) must fit the
    backbone's limit. config.long_input: "raise" (default) or "warn"."""
    limit = position_limit(model)
    if needed <= limit:
        return
    msg = (f"{what} needs {needed} positions but the backbone was trained on {limit} (max_position_embeddings, "
           f"RoPE scaling included); the memory prefix takes {prefix} of them (N={model.N} + BOS). Shorten the "
           f"input, or set config.long_input='warn' to run past the limit")
    if getattr(model.config, "long_input", "raise") == "raise":
        raise ValueError(msg)
    warnings.warn(msg, stacklevel=3)


def batch(model, B: int) -> None:
    if model.num_memories not in (1, B):
        raise ValueError(f"batch of {B} but the model holds {model.num_memories} independent memories")


def rows(model, memory_rows, B: int) -> torch.Tensor:
    """Memory rows [B|1, L, m, d] that replace the pool for one read or write (training), returned in the model's
    dtype (the gradient flows through the cast)."""
    r = tensor("memory_rows", memory_rows, floating=True)
    if r.ndim != 4 or r.shape[1] != model.L or r.shape[3] != model.d or r.shape[0] not in (1, B):
        raise ValueError(f"memory rows must be [B, L={model.L}, m, d={model.d}], got {tuple(r.shape)}")
    return r.to(device=model.device, dtype=model.dtype)


def _pool(model) -> torch.Tensor:   # the pool (a read-only view): its dtype and device are what inputs become
    return model.memory


def delta(model, delta) -> torch.Tensor:
    """New vectors [B, L, K, d] for write_memory, returned detached in the pool's dtype. Finiteness is checked
    after the cast: an fp32 1e30 is finite but overflows an fp16/bf16 pool."""
    tensor("delta", delta, floating=True)
    B, L, K, d = model.num_memories, model.L, model.K, model.d
    ok_rows = delta.ndim == 4 and (delta.shape[2] == K or (not model.initialized and 1 <= delta.shape[2] <= K))
    if not ok_rows or delta.shape[0] != B or delta.shape[1] != L or delta.shape[3] != d:
        raise ValueError(f"delta must have shape [{B}, {L}, {K}, {d}] (memories, layers, K, d), "
                         f"got {tuple(delta.shape)}")
    pool = _pool(model)
    out = delta.detach().to(device=pool.device, dtype=pool.dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"delta has non-finite values in the pool's dtype {pool.dtype}"
                         + ("" if delta.dtype == pool.dtype else f" (cast from {delta.dtype}: out of range)")
                         + "; the memory was not changed")
    return out


def memory(model, memory) -> torch.Tensor:
    """A whole pool ([L, N, d] or [B, L, N, d]) for set_memory, returned as a fresh tensor in the pool's
    dtype/device; shape and finiteness (after the cast) checked."""
    tensor("memory", memory, floating=True)
    mem = memory[None] if memory.ndim == 3 else memory
    want = (model.L, model.N, model.d)
    if mem.ndim != 4 or tuple(mem.shape[1:]) != want or mem.shape[0] < 1:
        raise ValueError(f"memory must have shape [B>=1, {model.L}, {model.N}, {model.d}] or {list(want)}, "
                         f"got {tuple(memory.shape)}")
    pool = _pool(model)
    with torch._C.DisableTorchFunctionSubclass():   # a read-only view of a pool comes back as a plain tensor
        mem = mem.to(device=pool.device, dtype=pool.dtype, copy=True)
    if not bool(torch.isfinite(mem).all()):
        raise ValueError(f"memory holds non-finite values in {pool.dtype}"
                         + ("" if memory.dtype == pool.dtype else f" (cast from {memory.dtype}: out of range)")
                         + "; nothing was changed")
    return mem


def initialized(value) -> bool:
    """`initialized` flag: a bool, 0/1, or a one-element tensor holding 0 or 1."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_meta:
            raise ValueError(f"initialized must be one value, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"initialized must be True/False (or 0/1), got {value!r}")


def generator_state(state) -> None:
    """A torch.Generator state (uint8 tensor) that a CPU generator accepts, or None."""
    if state is None:
        return
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8:
        raise ValueError(f"generator_state must be a uint8 tensor, got {getattr(state, 'dtype', type(state))}")
    try:
        torch.Generator().set_state(state)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid generator_state: {err}") from None


def num_memories(value, *, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"num_memories must be a positive integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------- read-only pool
_INPLACE_DUNDER = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__",
                   "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__", "__imatmul__",
                   "__set__"}


class ReadOnlyPool(torch.Tensor):
    """What `model.memory` returns: the pool itself (no copy: 66 MB for SmolLM2's default), refusing in-place
    changes. An in-place write would bypass the checks and `memory_snapshot` (which restores by reference).
    Any result that shares the pool's storage (a view, `.detach()`, `.float()` of a float pool) stays read-only;
    everything else (`.clone()`, arithmetic) is a plain tensor. `.numpy()` returns a read-only array."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        outs = kwargs.get("out")
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        inplace = name in _INPLACE_DUNDER or (name.endswith("_") and not name.startswith("__"))
        if (inplace and args and isinstance(args[0], ReadOnlyPool)) or any(isinstance(o, ReadOnlyPool) for o in outs):
            raise RuntimeError(f"model.memory is read-only ({name} would change it in place): use "
                               f"model.set_memory(...) or model.write_memory(...), or .clone() it first")
        with torch._C.DisableTorchFunctionSubclass():
            ret = func(*args, **kwargs)
            ptrs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, ReadOnlyPool)}
            if name == "numpy" and isinstance(ret, np.ndarray):
                ret.flags.writeable = False
                return ret
            return _keep_read_only(ret, ptrs)


def _keep_read_only(ret, ptrs):
    if isinstance(ret, torch.Tensor):
        if not isinstance(ret, ReadOnlyPool) and ret.untyped_storage().data_ptr() in ptrs:
            return ret.as_subclass(ReadOnlyPool)
        return ret
    if isinstance(ret, (tuple, list)):
        return type(ret)(_keep_read_only(r, ptrs) for r in ret)
    return ret


def read_only(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(ReadOnlyPool)


def plain(t: torch.Tensor) -> torch.Tensor:
    """The same tensor without the read-only wrapper (for writing it to a file)."""
    with torch._C.DisableTorchFunctionSubclass():
        return t.as_subclass(torch.Tensor)
