"""MemoryLLM (Wang et al., ICML 2024): a transformer φ plus a fixed-size memory pool θ, on any HF Llama.

Glossary - paper symbol -> code (the one place the mapping is spelled out; other files use the code names)

    φ              self.base: the HF LlamaForCausalLM (LoRA-adapted once trained); never copied, only driven
    L, d           number of decoder layers, hidden size (self.L, self.d)
    θ, θ_l         memory pool, [L, N, d] per memory: self.memory, self.memory[l]                       (§3.1.1)
    N              memory vectors per layer = config.num_blocks * config.num_tokens (self.N)
    K              vectors written (and dropped) per update = config.num_tokens (self.K)            (§3.1.2)
    e_θ^l          the last K vectors of θ_l: the prefix a write sees
    e_θ^l'         the K new vectors of layer l: delta[:, l] returned by inject_memory
    U(θ, x)        inject_memory(x) (compress x into delta) + write_memory(delta) (drop K, append K)  (Eq. 1)
    (1-K/N)^t      expected survival of a vector after t updates                                       (Eq. 3)
    bos_l          self.bos_embedding[l]: a per-layer vector in front of the memory (authors' code, not the paper)
    e_new          self.new_memory_positional_emb: learned vector added to the last K rows of every layer's
                   input during a write (authors' code; the paper does not mention it)

Reading (generation, Fig. 1a): at layer l the queries of the input attend to [bos_l; θ_l; input]. The prefix rows
are keys/values only (no query, no residual, no MLP), with RoPE positions 0..N (our option
memory_positions="shared": every memory row at N); the input sits at N+1...

Writing (self-update, Fig. 1b): at layer l the context x (n tokens) runs with [bos_l; e_θ^l] as prefix; the last
K outputs of layer l become e_θ^l'. If n < K, the last K-n memory vectors also get queries (App. A.1, Fig. 8), so
exactly K rows come out. Then K uniformly random old vectors are dropped from each layer independently, the
survivors keep their order and e_θ^l' is appended at the end.

Memory is stored as hidden states, so its keys/values depend on φ's weights. `PoolKV` caches them and updates
them incrementally after each write (see cache.py); the cache is keyed on the weights' identity and version
counters, so an optimizer step or a loaded state dict invalidates it automatically.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers import GenerationConfig, GenerationMixin, LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import rotate_half

from . import checks, persistence
from .backbones import check_architecture, load_backbone
from .cache import (CACHE_KW, Handed, MemoryCache, PoolHandles, PoolKV, PrefixOnly, drop_and_append, gqa_attention,
                    random_subset)


class MemoryLLMConfig(PretrainedConfig):
    """Configuration of the memory part; the backbone's own config rides along in `backbone_config`."""

    model_type = "memoryllm"

    def __init__(self, backbone: str | None = None, backbone_config: dict | None = None, num_blocks: int = 30,
                 num_tokens: int = 64, add_bos_embedding: bool = True, bos_init: str = "hidden",
                 memory_source: str = "output", drop_memory_per_layer: bool = True, min_context_tokens: int = 16,
                 short_context: str = "warn", long_input: str = "raise", seed: int = 0, lora: dict | None = None,
                 rope_factor: float | None = None, memory_layers: list[int] | None = None,
                 warmup: dict | None = None, memory_positions: str = "slot", **kwargs):
        self.backbone = backbone                    # "smollm2-135m", a path or hub id; None = weights saved with us
        self.backbone_config = backbone_config or {}
        self.num_blocks = num_blocks                # N = num_blocks * num_tokens
        self.num_tokens = num_tokens                # K
        self.add_bos_embedding = add_bos_embedding
        self.bos_init = bos_init                    # "hidden": layer inputs of the BOS token; "randn": authors'
        self.memory_source = memory_source          # "output" (paper) or "input" (ablation, issue 6)
        self.drop_memory_per_layer = drop_memory_per_layer  # authors' training code: True; their 7B inference: False
        self.min_context_tokens = min_context_tokens
        self.short_context = short_context          # "warn" or "raise" for contexts below the minimum
        # "raise" or "warn" when a read or write needs positions past the backbone's limit (memory rows included:
        # the input of a read sits at N+1..). Raise by default: RoPE positions past the limit were never trained
        # and the logits degrade silently; "warn" runs anyway (an extrapolation experiment).
        self.long_input = long_input
        self.seed = seed
        self.lora = lora                            # peft LoraConfig kwargs once adapters are attached
        self.rope_factor = rope_factor              # linear RoPE scaling applied to the backbone (authors: 2.0)
        self.memory_layers = memory_layers          # None = every layer (paper); e.g. the last half (§4.7.2)
        self.warmup = warmup                        # recipe that rebuilds a warm pool on load (MemoryLLM.warm_up)
        # RoPE positions of the pool on reads: "slot" (paper and authors: slot i at position i, so a vector moves
        # away from the queries as later writes push it down the pool) or "shared" (our option: every memory row at
        # position N, so a read cannot tell slots apart by position and the pool's order does not matter).
        # Writes are the same in both (their prefix is the last K vectors at positions 1..K).
        self.memory_positions = memory_positions
        kwargs.setdefault("architectures", ["MemoryLLM"])
        super().__init__(**kwargs)
        for name, allowed in (("memory_source", ("output", "input")), ("short_context", ("warn", "raise")),
                              ("long_input", ("raise", "warn")), ("memory_positions", ("slot", "shared")),
                              ("bos_init", ("hidden", "randn"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if num_blocks < 1 or num_tokens < 1:
            raise ValueError("num_blocks and num_tokens must be positive")


class MemoryLLM(PreTrainedModel, GenerationMixin, PoolHandles):
    config_class = MemoryLLMConfig
    base_model_prefix = "memoryllm"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _no_split_modules = ["LlamaDecoderLayer"]

    def __init__(self, config: MemoryLLMConfig, base: PreTrainedModel | None = None):
        super().__init__(config)
        if base is None:   # an empty backbone from the saved config (weights are loaded afterwards)
            base = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.backbone_config.items()
                                                   if k != "quantization_config"}))
        check_architecture(base)
        self.base = base
        L, d, dtype = self.L, self.d, base.dtype
        self.bos_embedding = nn.Parameter(torch.zeros(L, 1, d, dtype=dtype))
        self.new_memory_positional_emb = nn.Parameter(torch.zeros(1, 1, d, dtype=dtype))  # zero init as authors
        self._pool_handed, self._kv_handed = Handed(), Handed()   # who else sees the pool / its keys (see `_pool`)
        self.register_buffer("_slots", torch.zeros(1, L, self.N, d, dtype=dtype), persistent=False)
        self.initialized = False        # the first write into an empty pool tiles it (§2.4 of the official spec)
        self.generator = torch.Generator().manual_seed(config.seed)
        self._kvc: PoolKV | None = None
        self.last_keep: torch.Tensor | None = None
        gen = getattr(base, "generation_config", None)
        self.generation_config = GenerationConfig(
            bos_token_id=getattr(gen, "bos_token_id", None), eos_token_id=getattr(gen, "eos_token_id", None),
            pad_token_id=getattr(gen, "pad_token_id", None) or getattr(gen, "eos_token_id", None),
            do_sample=False)   # greedy unless asked: the paper's protocols decode greedily

    # ------------------------------------------------------------------ shapes and accessors
    @property
    def L(self) -> int:
        return self.base.config.num_hidden_layers

    @property
    def d(self) -> int:
        return self.base.config.hidden_size

    @property
    def N(self) -> int:
        return self.config.num_blocks * self.config.num_tokens

    @property
    def K(self) -> int:
        return self.config.num_tokens

    @property
    def layers(self):
        return self.base.model.layers

    @property
    def memory(self) -> torch.Tensor:
        """The pool θ: [L, N, d], or [B, L, N, d] when B independent memories are held. A read-only view (no copy):
        in-place changes raise, so nothing bypasses the checks or `memory_snapshot`; `.clone()` for a copy."""
        return checks.read_only(self._pool[0] if self._pool.shape[0] == 1 else self._pool)

    @property
    def num_memories(self) -> int:
        return self._pool.shape[0]

    @property
    def kv_cached(self) -> bool:   # the pool's keys/values are cached: reused by reads, updated by writes
        return self._kvc is not None

    def clear_cache(self) -> None:   # drop the pool's cached keys/values: the next read projects it again
        self._pool_kv = None

    def _has_memory(self, l: int) -> bool:   # memory_layers may count from the end (-1 = the last layer)
        return (ml := self.config.memory_layers) is None or l in ml or (l - self.L) in ml

    def _without_memory_layers(self, prefix):   # structure ablation: layers without memory get an empty prefix
        if self.config.memory_layers is None:
            return prefix
        return [(k, v) if self._has_memory(l) else (k[..., :0, :], v[..., :0, :]) for l, (k, v) in enumerate(prefix)]

    @property
    def _nb(self) -> int:   # rows the BOS vector adds in front of the memory
        return 1 if self.config.add_bos_embedding else 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_base(cls, base="smollm2-135m", num_blocks: int = 30, num_tokens: int = 64,
                  dtype: torch.dtype | None = torch.float32, attn_implementation: str = "sdpa", **config):
        """Wrap a backbone: `"smollm2-135m"` (embedded default), a local path / hub id, or a built HF model."""
        if isinstance(base, str):
            name, base = base, load_backbone(base, dtype=dtype, attn_implementation=attn_implementation,
                                             rope_factor=config.get("rope_factor"))
        else:
            name = None
        bc = base.config.to_dict()
        bc.pop("quantization_config", None)
        cfg = MemoryLLMConfig(backbone=name, backbone_config=bc, num_blocks=num_blocks, num_tokens=num_tokens,
                              **config)
        model = cls(cfg, base)
        model._init_bos()
        return model.eval()

    @torch.no_grad()
    def _init_bos(self) -> None:
        """bos_l = the hidden state entering layer l for the backbone's BOS token (an attention sink the base model
        already knows). The authors used random vectors (docs/paper_to_code.md): bos_init="randn"."""
        bos_id = self.base.config.bos_token_id
        if self.config.bos_init == "randn" or bos_id is None:
            std = self.base.get_input_embeddings().weight.std()
            self.bos_embedding.copy_(torch.randn(self.bos_embedding.shape, generator=self.generator) * std)
            return
        ids = torch.tensor([[bos_id]], device=self.device)
        hs = self.base.model(input_ids=ids, output_hidden_states=True).hidden_states
        for l in range(self.L):
            self.bos_embedding[l, 0] = hs[l][0, 0]

    def add_lora(self, **spec) -> None:       # LoRA on φ in place (peft), the authors' targets by default
        persistence.add_lora(self, **spec)

    def adapters_disabled(self):               # `with model.adapters_disabled():` runs the untouched backbone
        return persistence.adapters_disabled(self)

    # ------------------------------------------------------------------ small helpers around the HF layers
    def _rope(self, positions: torch.Tensor, like: torch.Tensor):
        """cos/sin for 1-D positions, shaped to broadcast over [..., T, head_dim] (RoPE angles in fp32 by HF)."""
        cos, sin = self.base.model.rotary_emb(like, positions[None])
        return cos[0], sin[0]

    def _prefix_rope(self, positions: torch.Tensor, like: torch.Tensor):
        """cos/sin of a read's prefix [bos; memory rows] at slots `positions` (0..T-1): the slot itself, or with
        memory_positions="shared" the last slot for every memory row (the BOS row keeps 0)."""
        if self.config.memory_positions == "shared":
            positions = torch.where(positions < self._nb, positions, positions[-1])
        return self._rope(positions, like)

    def _kv(self, layer, rows: torch.Tensor, cos, sin):
        """Keys/values of prefix rows [B, T, d] as layer `layer` would compute them (LoRA included)."""
        attn = layer.self_attn
        B, T, _ = rows.shape
        x = layer.input_layernorm(rows)
        k = attn.k_proj(x).view(B, T, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(B, T, -1, attn.head_dim).transpose(1, 2)
        if cos is None:
            return k, v
        return k * cos + rotate_half(k) * sin, v

    def _mask(self, allowed: torch.Tensor | None):
        """bool [B|1, q, kv] -> what the attention implementation expects ([B, 1, q, kv])."""
        if allowed is None:
            return None
        allowed = allowed[:, None]
        if self.base.config._attn_implementation == "eager":
            return torch.zeros(allowed.shape, dtype=self.dtype, device=allowed.device).masked_fill(
                ~allowed, torch.finfo(self.dtype).min)
        return allowed

    def _causal(self, q: int, prefix: int, device) -> torch.Tensor:
        """[1, q, prefix+q]: the prefix is always visible, the queries see themselves causally."""
        i = torch.arange(q, device=device)[:, None]
        j = torch.arange(prefix + q, device=device)[None, :]
        return ((j < prefix) | (j - prefix <= i))[None]

    @staticmethod
    def _call(layer, h, mask, pos, cache, cos_sin):
        out = layer(h, attention_mask=mask, position_ids=pos, **{CACHE_KW: cache},
                    position_embeddings=cos_sin, use_cache=cache is not None)
        return out[0] if isinstance(out, tuple) else out

    # ------------------------------------------------------------------ memory keys/values for reading
    def _kv_params(self):
        ps = [self.bos_embedding]
        for layer in self.layers:
            ps += list(layer.input_layernorm.parameters()) + list(layer.self_attn.k_proj.parameters())
            ps += list(layer.self_attn.v_proj.parameters())
        return ps

    def _weights_key(self):
        return tuple((p.data_ptr(), p._version) for p in self._kv_params()) + (
            self.base.model.rotary_emb.inv_freq.data_ptr(),)

    def _cacheable(self) -> bool:
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self._kv_params()))

    def _project_pool_rows(self, rows: torch.Tensor, with_bos: bool):
        """Un-rotated keys and values of rows [B, L, T, d] -> two lists of L tensors [B, kvh, (1+)T, hd]."""
        B = rows.shape[0]
        ks, vs = [], []
        for l, layer in enumerate(self.layers):
            r = rows[:, l]
            if with_bos and self._nb:
                r = torch.cat([self.bos_embedding[l].expand(B, 1, -1), r], 1)
            k, v = self._kv(layer, r, None, None)
            ks.append(k)
            vs.append(v)
        return ks, vs

    def _pool_prefix(self):
        """Per-layer (k, v) of [bos_l; θ_l] at positions 0..N, cached across reads, and the PoolKV holding them
        (None when not cached: grad through φ's key/value weights)."""
        if not self._cacheable():
            return self._rows_prefix(self._slots), None
        key = (self._pool_key(), self._weights_key())
        if self._kvc is None or self._kvc.key != key:
            with torch.no_grad():
                self._kvc = PoolKV.build(key, *self._project_pool_rows(self._slots, with_bos=True))
                self._kv_handed.reset()
        return self._kvc.prefix(self._prefix_rope), self._kvc

    def _rows_prefix(self, rows: torch.Tensor):
        """Per-layer (k, v) of [bos_l; rows_l] (training reads: the new K vectors, or subset + delta)."""
        raw_k, v = self._project_pool_rows(rows, with_bos=True)
        cos, sin = self._prefix_rope(torch.arange(raw_k[0].shape[-2], device=rows.device), raw_k[0])
        return [(k * cos + rotate_half(k) * sin, vl) for k, vl in zip(raw_k, v)]

    # ------------------------------------------------------------------ read: forward / generate
    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, labels=None, use_cache=None,
                use_memory: bool = True, memory_rows: torch.Tensor | None = None, logits_to_keep: int = 0,
                position_ids=None, **kwargs) -> CausalLMOutputWithPast:
        """Causal-LM forward that reads the memory (§3.1.1). Positions and the memory part of the attention mask
        are handled here: `attention_mask`, if given, covers only the real tokens (left padding allowed), and
        `position_ids` is ignored. `memory_rows` [B, L, m, d] replaces the pool (training reads);
        `use_memory=False` runs the plain backbone (the "borderline")."""
        checks.ids(self, input_ids, attention_mask)
        B, q = input_ids.shape
        cache = past_key_values if past_key_values is not None else kwargs.pop("cache", None)   # 5.24's name
        if cache is not None and not isinstance(cache, MemoryCache):
            raise TypeError(f"past_key_values must be a MemoryCache (from model.generate), got {type(cache)}")
        if cache is None and use_cache:
            cache = MemoryCache()
        if cache is not None and cache.is_primed:       # later decoding steps: the prefix is already inside
            P, layer_cache = cache.prefix_len, cache
        else:
            prefix, pool_kv = self._read_prefix(B, use_memory, memory_rows)
            P = max(k.shape[-2] for k, _ in prefix) if prefix is not None else 0
            if cache is None and pool_kv is not None:   # a one-off read: the prefix stays in place, no torch.cat
                layer_cache = MemoryCache(room=q)
                layer_cache.prime(prefix, pool_kv)
            elif cache is not None:
                cache.prime(prefix if prefix is not None else self._empty_prefix(B), pool_kv)
                layer_cache = cache
            else:
                layer_cache = PrefixOnly(prefix) if prefix is not None else None
        past = cache.get_seq_length() if cache is not None else 0
        checks.positions(self, P + past + q, "this read", P)
        pos, mask = self._positions_and_mask(B, q, P, past, attention_mask, input_ids.device)

        h = self.base.get_input_embeddings()(input_ids)
        cos_sin = self.base.model.rotary_emb(h, pos)
        plen = ([c.prefix_len for c in layer_cache.layers] if isinstance(layer_cache, MemoryCache)
                else [k.shape[-2] for k, _ in layer_cache.prefix] if layer_cache is not None else [0] * self.L)
        with gqa_attention(self.base.config):
            for l, layer in enumerate(self.layers):
                m = mask if mask is None or plen[l] == P else mask[..., P - plen[l]:]   # layers without memory
                h = self._call(layer, h, m, pos, layer_cache, cos_sin)
        h = self.base.model.norm(h)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.base.lm_head(h)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                               ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_KW: cache})

    def _read_prefix(self, B: int, use_memory: bool, memory_rows):
        """What the queries attend to before the input, per layer (k, v): [bos_l; θ_l] (cached), given rows
        (training), or None (no memory, or an empty pool); and the PoolKV that may lend its buffers (or None)."""
        pool_kv = None
        if memory_rows is not None:
            prefix = self._rows_prefix(checks.rows(self, memory_rows, B))
        elif use_memory and self.initialized:
            checks.batch(self, B)
            prefix, pool_kv = self._pool_prefix()
        else:
            return None, None
        if self.config.memory_layers is not None or torch.is_grad_enabled():   # lend buffers to no-grad reads only
            prefix, pool_kv = self._without_memory_layers(prefix), None
        if prefix[0][0].shape[0] != B:
            prefix = [(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in prefix]
        return prefix, pool_kv

    def _empty_prefix(self, B: int):
        attn = self.layers[0].self_attn
        empty = torch.empty(B, self.base.config.num_key_value_heads, 0, attn.head_dim, dtype=self.dtype,
                            device=self.device)
        return [(empty, empty)] * self.L

    def _positions_and_mask(self, B: int, q: int, P: int, past: int, attention_mask, dev):
        """The input sits after the P prefix rows and `past` cached tokens: positions P+past.. and a mask in
        which the prefix is always visible. Left padding: positions count real tokens only; pad rows see
        themselves so no row is all-masked (NaN)."""
        if attention_mask is None:
            pos = (P + past + torch.arange(q, device=dev))[None].expand(B, q)
            eager = self.base.config._attn_implementation == "eager"
            allowed = None if (q == 1 or (P + past == 0 and not eager)) else self._causal(q, P + past, dev)
            return pos, self._mask(allowed)
        if attention_mask.shape != (B, past + q):
            raise ValueError(f"attention_mask must cover the real tokens only: expected shape {(B, past + q)}, "
                             f"got {tuple(attention_mask.shape)}")
        am = attention_mask.bool()
        pos = P + (am.long().cumsum(-1) - 1).clamp(min=0)[:, -q:]
        keys_ok = torch.cat([am.new_ones(B, P), am], 1)[:, None, :]           # [B, 1, kv]
        allowed = keys_ok & self._causal(q, P + past, dev)                    # [B, q, kv]
        allowed[:, torch.arange(q), P + past + torch.arange(q)] = True
        if q == 1 and bool(am.all()):
            allowed = None
        return pos, self._mask(allowed)

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        """HF `generate` reading the memory (`use_memory=False`: the plain backbone); a MemoryCache holds the prefix."""
        checks.ids(self, input_ids, attention_mask)
        gc = kwargs.get("generation_config") or self.generation_config
        new = kwargs.get("max_new_tokens", gc.max_new_tokens)
        new = new if new is not None else max(kwargs.get("max_length", gc.max_length) - input_ids.shape[1], 0)
        P = (self._nb + self.N) if kwargs.get("use_memory", True) and self.initialized else 0
        checks.positions(self, P + input_ids.shape[1] + new, f"generating {new} tokens", P)
        if "past_key_values" not in kwargs and "cache" not in kwargs:   # either name (transformers 5.24 renamed it)
            kwargs[CACHE_KW] = MemoryCache(room=input_ids.shape[1] + new)
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    # ------------------------------------------------------------------ write: inject_memory / write_memory
    def inject_memory(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      update_memory: bool = True, memory_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Compress a context into K new vectors per layer (e_θ^l', §3.1.2) and, if `update_memory`, commit them.
        Returns delta [B, L, K, d] (with gradient when grad is enabled). `memory_rows` [B, L, K, d] replaces the
        last K pool vectors as the write's prefix (training chains writes through it). B > 1 writes into B
        independent memories (see `expand_memories`); contexts in one batch must have equal length."""
        checks.ids(self, input_ids, attention_mask, write=True)
        B = input_ids.shape[0]
        if memory_rows is not None:
            last = checks.rows(self, memory_rows, B)
            if memory_rows.shape[2] != self.K:
                raise ValueError(f"memory_rows for a write must hold K={self.K} vectors per layer")
        elif self.initialized:
            checks.batch(self, B)
            last = self._slots[:, :, -self.K:]
        else:
            checks.batch(self, B)
            last = None
        if last is not None and last.shape[0] != B:
            last = last.expand(B, -1, -1, -1)
        n = input_ids.shape[1]   # a write's rows sit at positions up to nb + min(n, K) + max(n, K) - 1
        checks.positions(self, n if last is None else self._nb + n + self.K, "this write", self._nb + self.K)
        with gqa_attention(self.base.config):
            delta = self._encode(input_ids, last)
        if update_memory:
            self.write_memory(delta.detach())
        return delta

    def _encode(self, input_ids: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
        B, n = input_ids.shape
        K, nb, dev = self.K, self._nb, input_ids.device
        h = self.base.get_input_embeddings()(input_ids)
        take_input = self.config.memory_source == "input"
        deltas = []
        if last is None:
            # First write into an empty pool: a plain pass (no BOS, no memory, no e_new); the official code tiles
            # its last min(n, K) outputs over all N slots.
            pos = torch.arange(n, device=dev)[None]
            cos_sin = self.base.model.rotary_emb(h, pos)
            eager = self.base.config._attn_implementation == "eager"
            mask = self._mask(self._causal(n, 0, dev)) if (eager and n > 1) else None
            for layer in self.layers:
                out = self._call(layer, h, mask, pos, None, cos_sin)
                deltas.append((h if take_input else out)[:, -min(n, K):])
                h = out
            return torch.stack(deltas, 1)
        np_ = min(n, K)               # memory rows that stay key/value-only; the other K - np_ get queries
        Q = K + n - np_               # = max(n, K) rows with queries
        P = nb + np_
        pos_q = torch.arange(P, P + Q, device=dev)[None]
        cos_sin = self.base.model.rotary_emb(h, pos_q)
        cos_p, sin_p = self._rope(torch.arange(P, device=dev), h)
        mask = self._mask(self._causal(Q, P, dev))
        e_new = self.new_memory_positional_emb
        for l, layer in enumerate(self.layers):
            if not self._has_memory(l):   # structure ablation: a plain layer at the same positions, no delta
                cs = (cos_sin[0][:, -n:], cos_sin[1][:, -n:])
                h = self._call(layer, h, self._mask(self._causal(n, 0, dev)), pos_q[:, -n:], None, cs)
                deltas.append(torch.zeros_like(last[:, l]))
                continue
            m = last[:, l]                                                    # e_θ^l  [B, K, d]
            x = torch.cat([m[:, np_:], h], 1)                                 # rows with queries [B, Q, d]
            x_e = torch.cat([x[:, :Q - K], x[:, Q - K:] + e_new], 1)          # e_new on the last K rows
            pre = m[:, :np_]
            if nb:
                pre = torch.cat([self.bos_embedding[l].expand(B, 1, -1), pre], 1)
            pk, pv = self._kv(layer, pre, cos_p, sin_p)
            out = self._call(layer, x_e, mask, pos_q, PrefixOnly({l: (pk, pv)}), cos_sin)
            deltas.append((x if take_input else out)[:, -K:])                 # e_θ^l'
            h = out[:, -n:]
        return torch.stack(deltas, 1)

    def draw_survivors(self, B: int) -> torch.Tensor:
        """Sorted indices of the N-K survivors of the next write [B, L, N-K], uniform without replacement and per
        layer (the authors' training code; their 7B inference shares one draw: drop_memory_per_layer=False)."""
        layers = self.L if self.config.drop_memory_per_layer else 1
        keep = random_subset(B, layers, self.N, self.N - self.K, self.generator)
        return keep.expand(B, self.L, -1).to(self._slots.device)

    def sample_memory_rows(self, keep: int, generator: torch.Generator) -> torch.Tensor:
        """`keep` old vectors per layer, a sorted uniform subset drawn independently per layer from `generator`:
        [1, L, keep, d] (training reads the pool as it would look after some writes, §3.2)."""
        idx = random_subset(1, self.L, self.N, keep, generator).to(self._slots.device)
        return self._slots[:1].gather(2, idx[..., None].expand(-1, -1, -1, self.d))

    @torch.no_grad()
    def write_memory(self, delta: torch.Tensor) -> None:
        """Commit delta [B, L, K, d]: drop K random vectors per layer, keep order, append delta (§3.1.2)."""
        delta = checks.delta(self, delta)          # cast to the pool's dtype, then checked (shape, finite)
        B, N = delta.shape[0], self.N
        old_kv = self._kvc
        if not self.initialized:
            k = delta.shape[2]
            reps, rest = divmod(N, k)
            new = torch.cat([delta.repeat(1, 1, reps, 1), delta[:, :, k - rest:]], 2)
            keep = None
        else:
            keep = self.draw_survivors(B)
            old = self._slots
            kv_valid = old_kv is not None and old_kv.key == (self._pool_key(), self._weights_key())
            new = torch.empty_like(old) if self._pool_handed.held() else old     # copy-on-write, else in place
            for l in range(self.L):
                drop_and_append(old[:, l], keep[:, l], delta[:, l], out=new[:, l])
        # Incremental key/value update: gather survivors' projections, project only the K new vectors.
        new_kv = None
        if keep is not None and kv_valid and self._cacheable():
            new_kv = old_kv.write(((new.data_ptr(), new._version), old_kv.key[1]), keep,
                                  *self._project_pool_rows(delta, with_bos=False), skip=self._nb,
                                  in_place=not self._kv_handed.held())
        if new is not self._slots:
            self._slots = new
            self._pool_handed.reset()
        self.initialized = True
        self.last_keep = keep          # survivors of this write [B, L, N-K] (None for the first, tiling write)
        if new_kv is not old_kv:
            self._kvc = new_kv
            self._kv_handed.reset()

    # ------------------------------------------------------------------ memory state management
    def reset_memory(self, num_memories: int | None = None) -> None:
        """Empty pool (uninitialized: the next write tiles), with `num_memories` memories (default: as many as now).
        The generator is not reseeded."""
        B = checks.num_memories(num_memories, allow_none=True) or self.num_memories
        self._pool = torch.zeros(B, self.L, self.N, self.d, dtype=self._pool.dtype, device=self._pool.device)
        self.initialized = False
        self._pool_kv = None

    def expand_memories(self, num_memories: int) -> None:
        """Hold `num_memories` independent copies of the current pool (memory 0 when several are held: batched
        evaluation); 1 to go back."""
        num_memories = checks.num_memories(num_memories)
        src = self._pool[:1]
        self._pool = src.expand(num_memories, -1, -1, -1).clone()
        self._pool_kv = None

    def seed(self, seed: int) -> None:   # reseed the drop generator
        self.generator.manual_seed(seed)

    def memory_state(self) -> dict[str, torch.Tensor]:
        """Everything that defines the memory: pool [B, L, N, d], `initialized`, the drop generator's state."""
        return {"memory": checks.read_only(self._pool), "initialized": torch.tensor(int(self.initialized)),
                "generator_state": self.generator.get_state()}

    @torch.no_grad()
    def set_memory(self, memory: torch.Tensor, initialized: bool = True,
                   generator_state: torch.Tensor | None = None) -> None:
        """Replace the memory by `memory` ([L, N, d] or [B, L, N, d]): the whole input is checked (shape,
        finiteness after the cast to the pool's dtype, generator state) before anything is assigned."""
        mem = checks.memory(self, memory)
        initialized = checks.initialized(initialized)
        checks.generator_state(generator_state)
        self._pool, self.initialized, self._pool_kv = mem, initialized, None
        if generator_state is not None:
            self.generator.set_state(generator_state)

    # ------------------------------------------------------------------ persistence: see persistence.py
    def save_memory(self, path) -> None:                  # pool + initialized + generator state, one file
        persistence.save_memory(self, path)

    def load_memory(self, path, cast: bool = False) -> None:   # checked first: a bad file changes nothing;
        persistence.load_memory(self, path, cast=cast)           # cast=True accepts a pool of another dtype

    def save_pretrained(self, save_directory, **kwargs) -> None:
        persistence.save_pretrained(self, save_directory, **kwargs)

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs) -> "MemoryLLM":   # our folders, snapshots, authors' format
        return persistence.from_pretrained(cls, path, *args, **kwargs)

    def warm_up(self, **recipe) -> None:                  # rebuild a warm pool from `config.warmup`'s recipe
        persistence.warm_up(self, **recipe)

    @contextlib.contextmanager
    def memory_snapshot(self):
        """`with model.memory_snapshot(): ...` restores pool, generator and caches on exit (O(1): a held pool is
        never modified in place - writes copy it first - and `model.memory` is read-only, so a reference is enough;
        an in-place change through the private `_pool` is caught by its version counter and raises)."""
        state = (self._pool, self.initialized, self.generator.get_state(), self._pool_kv)
        version = self._pool._version
        try:
            yield self
        finally:
            self._pool, self.initialized, gen, self._pool_kv = state
            self.generator.set_state(gen)
            if self._pool._version != version:
                self._pool_kv = None
                raise RuntimeError("the pool was modified in place inside memory_snapshot(): it cannot be restored")


def expected_retention(t, N: int, K: int) -> float:
    """(1 - K/N)^t: expected fraction of a write's vectors still in the pool after t later updates (Eq. 3)."""
    return (1 - K / N) ** t


def theoretical_accuracy(t, a_u: float, a_b: float, N: int, K: int) -> float:
    """Eq. 5 with the borderline added back: a_t = a_b + (a_u - a_b) * ((N-K)/N)^(t-1), t >= 1."""
    return a_b + (a_u - a_b) * ((N - K) / N) ** (t - 1)


def memory_parameter_count(L: int, N: int, d: int) -> int:
    """L*N*d: 32*7680*4096 = 1,006,632,960 for Llama-2-7B (the paper's '1.066B' is a slip)."""
    return L * N * d


__all__ = ["MemoryLLM", "MemoryLLMConfig", "expected_retention", "theoretical_accuracy", "memory_parameter_count"]
