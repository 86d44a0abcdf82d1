"""Input checks for MemoryLLM's public methods. Each raises before anything changes (validate, then commit), and
each message names what is wrong. Kept apart from model.py so the model file reads as the paper."""
from __future__ import annotations

import warnings

import torch


def ids(model, input_ids, attention_mask=None, *, write: bool = False) -> None:
    """Token ids [B, n] for a read or a write; for a write also the padding and short-context rules."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
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


def batch(model, B: int) -> None:
    if model.num_memories not in (1, B):
        raise ValueError(f"batch of {B} but the model holds {model.num_memories} independent memories")


def rows(model, memory_rows, B: int) -> None:
    """Memory rows [B|1, L, m, d] that replace the pool for one read or write (training)."""
    if not isinstance(memory_rows, torch.Tensor) or not memory_rows.is_floating_point():
        raise TypeError("memory_rows must be a floating-point tensor")
    r = memory_rows
    if r.ndim != 4 or r.shape[1] != model.L or r.shape[3] != model.d or r.shape[0] not in (1, B):
        raise ValueError(f"memory rows must be [B, L={model.L}, m, d={model.d}], got {tuple(r.shape)}")


def delta(model, delta) -> torch.Tensor:
    """New vectors [B, L, K, d] for write_memory, returned detached in the pool's dtype. Finiteness is checked
    after the cast: an fp32 1e30 is finite but overflows an fp16/bf16 pool."""
    if not isinstance(delta, torch.Tensor):
        raise TypeError(f"delta must be a torch.Tensor, got {type(delta).__name__}")
    if not delta.is_floating_point():
        raise TypeError(f"delta must be a floating-point tensor, got {delta.dtype}")
    B, L, K, d = model.num_memories, model.L, model.K, model.d
    ok_rows = delta.ndim == 4 and (delta.shape[2] == K or (not model.initialized and 1 <= delta.shape[2] <= K))
    if not ok_rows or delta.shape[0] != B or delta.shape[1] != L or delta.shape[3] != d:
        raise ValueError(f"delta must have shape [{B}, {L}, {K}, {d}] (memories, layers, K, d), "
                         f"got {tuple(delta.shape)}")
    pool = model.memory_state()["memory"]
    out = delta.detach().to(device=pool.device, dtype=pool.dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"delta has non-finite values in the pool's dtype {pool.dtype}; the memory was not changed")
    return out


def memory(model, memory) -> torch.Tensor:
    """A whole pool ([L, N, d] or [B, L, N, d]) for set_memory, returned as a fresh tensor in the pool's
    dtype/device; shape and finiteness (after the cast) checked."""
    if not isinstance(memory, torch.Tensor) or not memory.is_floating_point():
        raise TypeError(f"memory must be a floating-point tensor, got {getattr(memory, 'dtype', type(memory))}")
    mem = memory[None] if memory.ndim == 3 else memory
    want = (model.L, model.N, model.d)
    if mem.ndim != 4 or tuple(mem.shape[1:]) != want or mem.shape[0] < 1:
        raise ValueError(f"memory must have shape [B>=1, {model.L}, {model.N}, {model.d}] or {list(want)}, "
                         f"got {tuple(memory.shape)}")
    pool = model.memory_state()["memory"]
    mem = mem.to(device=pool.device, dtype=pool.dtype, copy=True)
    if not bool(torch.isfinite(mem).all()):
        raise ValueError(f"memory holds non-finite values in {pool.dtype}; nothing was changed")
    return mem


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
