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
are keys/values only (no query, no residual, no MLP), with RoPE positions 0..N; the input sits at N+1...

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
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import GenerationConfig, GenerationMixin, LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import rotate_half

from .backbones import check_architecture, load_backbone, load_tokenizer
from .cache import MemoryCache, PrefixOnly

MEMORY_FORMAT = "memoryllm-repro-memory-v1"
WEIGHTS_FILE = "memoryllm.safetensors"   # learned vectors + LoRA adapter: only what is not in the base
MEMORY_FILE = "memory.safetensors"


class MemoryLLMConfig(PretrainedConfig):
    """Configuration of the memory part; the backbone's own config rides along in `backbone_config`."""

    model_type = "memoryllm"

    def __init__(self, backbone: str | None = None, backbone_config: dict | None = None, num_blocks: int = 30,
                 num_tokens: int = 64, add_bos_embedding: bool = True, bos_init: str = "hidden",
                 memory_source: str = "output", drop_memory_per_layer: bool = True, min_context_tokens: int = 16,
                 short_context: str = "warn", seed: int = 0, lora: dict | None = None,
                 rope_factor: float | None = None, memory_layers: list[int] | None = None, **kwargs):
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
        self.seed = seed
        self.lora = lora                            # peft LoraConfig kwargs once adapters are attached
        self.rope_factor = rope_factor              # linear RoPE scaling applied to the backbone (authors: 2.0)
        self.memory_layers = memory_layers          # None = every layer (paper); e.g. the last half (§4.7.2)
        super().__init__(**kwargs)
        for name, allowed in (("memory_source", ("output", "input")), ("short_context", ("warn", "raise")),
                              ("bos_init", ("hidden", "randn"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if num_blocks < 1 or num_tokens < 1:
            raise ValueError("num_blocks and num_tokens must be positive")


class PoolKV:
    """Projected keys/values of [bos_l; θ_l] for all layers: raw (un-rotated) keys and values
    [B, L, kvh, 1+N, hd]; rotated keys are derived lazily. Immutable except for that lazy field, so a
    memory snapshot can keep a reference instead of a copy."""

    def __init__(self, key, raw_k, v):
        self.key, self.raw_k, self.v, self._rot = key, raw_k, v, None

    def prefix(self, model: "MemoryLLM"):
        if self._rot is None:
            T = self.raw_k.shape[-2]
            cos, sin = model._rope(torch.arange(T, device=self.raw_k.device), self.raw_k)
            self._rot = self.raw_k * cos + rotate_half(self.raw_k) * sin
        return [(self._rot[:, l], self.v[:, l]) for l in range(self.raw_k.shape[1])]


class MemoryLLM(PreTrainedModel, GenerationMixin):
    config_class = MemoryLLMConfig
    base_model_prefix = "memoryllm"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _no_split_modules = ["LlamaDecoderLayer"]

    def __init__(self, config: MemoryLLMConfig, base: PreTrainedModel | None = None):
        super().__init__(config)
        if base is None:
            bc = dict(config.backbone_config)
            bc.pop("quantization_config", None)
            base = LlamaForCausalLM(LlamaConfig(**bc))
        check_architecture(base)
        self.base = base
        L, d, dtype = self.L, self.d, base.dtype
        self.bos_embedding = nn.Parameter(torch.zeros(L, 1, d, dtype=dtype))
        self.new_memory_positional_emb = nn.Parameter(torch.zeros(1, 1, d, dtype=dtype))  # zero init as authors
        self.register_buffer("_pool", torch.zeros(1, L, self.N, d, dtype=dtype), persistent=False)
        self.initialized = False        # the first write into an empty pool tiles it (§2.4 of the official spec)
        self.generator = torch.Generator().manual_seed(config.seed)
        self._pool_kv: PoolKV | None = None
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
        """The pool θ: [L, N, d], or [B, L, N, d] when B independent memories are held. Treat as read-only."""
        return self._pool[0] if self._pool.shape[0] == 1 else self._pool

    @property
    def num_memories(self) -> int:
        return self._pool.shape[0]

    def _has_memory(self, l: int) -> bool:
        ml = self.config.memory_layers
        return ml is None or l in ml or (l - self.L) in ml

    def _without_memory_layers(self, prefix):
        """Replace the prefix of layers without memory (structure ablation) by an empty one."""
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
        already knows). The authors used random vectors (see official-implementation.md §6.2): bos_init="randn"."""
        bos_id = self.base.config.bos_token_id
        if self.config.bos_init == "randn" or bos_id is None:
            std = self.base.get_input_embeddings().weight.std()
            self.bos_embedding.copy_(torch.randn(self.bos_embedding.shape, generator=self.generator) * std)
            return
        ids = torch.tensor([[bos_id]], device=self.device)
        hs = self.base.model(input_ids=ids, output_hidden_states=True).hidden_states
        for l in range(self.L):
            self.bos_embedding[l, 0] = hs[l][0, 0]

    def add_lora(self, r: int = 8, lora_alpha: int = 32, lora_dropout: float = 0.1,
                 target_modules=("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj")) -> None:
        """Attach LoRA adapters to φ in place (peft), as the authors did (o_proj is not targeted)."""
        if self.config.lora is not None and any("lora_" in n for n, _ in self.base.named_parameters()):
            raise ValueError("LoRA adapters are already attached")
        from peft import LoraConfig, inject_adapter_in_model
        spec = dict(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=list(target_modules))
        inject_adapter_in_model(LoraConfig(**spec), self.base)
        self.train(self.training)   # new dropout modules start in train mode; follow ours
        self.config.lora = spec
        self._pool_kv = None

    @contextlib.contextmanager
    def adapters_disabled(self):
        """`with model.adapters_disabled(): ...` runs φ without its LoRA deltas (the untouched backbone)."""
        from peft.tuners.lora import LoraLayer
        layers = [m for m in self.base.modules() if isinstance(m, LoraLayer)]
        for m in layers:
            m.enable_adapters(False)
        self._pool_kv = None
        try:
            yield self
        finally:
            for m in layers:
                m.enable_adapters(True)
            self._pool_kv = None

    # ------------------------------------------------------------------ input checks (raise before any change)
    def _check_ids(self, input_ids, attention_mask=None, *, write: bool = False) -> None:
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"input_ids must be an integer tensor (int64), got dtype {input_ids.dtype}")
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be 2-D [batch, tokens], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
            raise ValueError("input_ids is empty: nothing to " + ("write into memory" if write else "read"))
        vocab = self.base.config.vocab_size
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
            pad = self.generation_config.pad_token_id
            if attention_mask is None and pad is not None and bool((input_ids == pad).all(-1).any()):
                raise ValueError(f"a context consists only of padding tokens (id {pad}): nothing to write")
            n, m = input_ids.shape[1], self.config.min_context_tokens
            if n < m:
                msg = (f"context of {n} tokens is shorter than min_context_tokens={m} (the authors trained with at "
                       f"least 16); retention of very short writes is poor")
                if self.config.short_context == "raise":
                    raise ValueError(msg)
                warnings.warn(msg, stacklevel=3)

    def _check_batch(self, B: int) -> None:
        if self.num_memories not in (1, B):
            raise ValueError(f"batch of {B} but the model holds {self.num_memories} independent memories")

    # ------------------------------------------------------------------ small helpers around the HF layers
    def _rope(self, positions: torch.Tensor, like: torch.Tensor):
        """cos/sin for 1-D positions, shaped to broadcast over [..., T, head_dim] (RoPE angles in fp32 by HF)."""
        cos, sin = self.base.model.rotary_emb(like, positions[None])
        return cos[0], sin[0]

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
        out = layer(h, attention_mask=mask, position_ids=pos, past_key_values=cache,
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
        """Un-rotated keys and values of rows [B, L, T, d] -> two [B, L, kvh, (1+)T, hd] tensors."""
        B = rows.shape[0]
        ks, vs = [], []
        for l, layer in enumerate(self.layers):
            r = rows[:, l]
            if with_bos and self._nb:
                r = torch.cat([self.bos_embedding[l].expand(B, 1, -1), r], 1)
            k, v = self._kv(layer, r, None, None)
            ks.append(k)
            vs.append(v)
        return torch.stack(ks, 1), torch.stack(vs, 1)

    def _pool_prefix(self):
        """Per-layer (k, v) of [bos_l; θ_l] at positions 0..N, cached across reads."""
        if not self._cacheable():
            raw_k, v = self._project_pool_rows(self._pool, with_bos=True)
            return PoolKV(None, raw_k, v).prefix(self)
        key = (id(self._pool), self._pool._version, self._weights_key())
        if self._pool_kv is None or self._pool_kv.key != key:
            with torch.no_grad():
                self._pool_kv = PoolKV(key, *self._project_pool_rows(self._pool, with_bos=True))
        return self._pool_kv.prefix(self)

    def _rows_prefix(self, rows: torch.Tensor):
        """Per-layer (k, v) of [bos_l; rows_l] (training reads: the new K vectors, or subset + delta)."""
        raw_k, v = self._project_pool_rows(rows, with_bos=True)
        cos, sin = self._rope(torch.arange(raw_k.shape[-2], device=rows.device), raw_k)
        k = raw_k * cos + rotate_half(raw_k) * sin
        return [(k[:, l], v[:, l]) for l in range(self.L)]

    # ------------------------------------------------------------------ read: forward / generate
    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, labels=None, use_cache=None,
                use_memory: bool = True, memory_rows: torch.Tensor | None = None, logits_to_keep: int = 0,
                position_ids=None, **kwargs) -> CausalLMOutputWithPast:
        """Causal-LM forward that reads the memory (§3.1.1). Positions and the memory part of the attention mask
        are handled here: `attention_mask`, if given, covers only the real tokens (left padding allowed), and
        `position_ids` is ignored. `memory_rows` [B, L, m, d] replaces the pool (training reads);
        `use_memory=False` runs the plain backbone (the "borderline")."""
        self._check_ids(input_ids)
        B, q = input_ids.shape
        cache = past_key_values
        if cache is not None and not isinstance(cache, MemoryCache):
            raise TypeError(f"past_key_values must be a MemoryCache (from model.generate), got {type(cache)}")
        if cache is None and use_cache:
            cache = MemoryCache()
        if cache is not None and cache.is_primed:
            P, layer_cache = cache.prefix_len, cache
        else:
            if memory_rows is not None:
                self._check_rows(memory_rows, B)
                prefix = self._rows_prefix(memory_rows.to(self.dtype))
            elif use_memory and self.initialized:
                self._check_batch(B)
                prefix = self._pool_prefix()
            else:
                prefix = None
            if prefix is not None:
                prefix = self._without_memory_layers(prefix)
                if prefix[0][0].shape[0] != B:
                    prefix = [(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in prefix]
            P = max(k.shape[-2] for k, _ in prefix) if prefix is not None else 0
            if cache is not None:
                if prefix is None:
                    c = self.base.config
                    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
                    empty = torch.empty(B, c.num_key_value_heads, 0, hd, dtype=self.dtype, device=self.device)
                    prefix = [(empty, empty)] * self.L
                cache.prime(prefix)
                layer_cache = cache
            else:
                layer_cache = PrefixOnly(prefix) if prefix is not None else None
        past = cache.get_seq_length() if cache is not None else 0
        dev = input_ids.device

        if attention_mask is None:
            pos = (P + past + torch.arange(q, device=dev))[None].expand(B, q)
            eager = self.base.config._attn_implementation == "eager"
            allowed = None if (q == 1 or (P + past == 0 and not eager)) else self._causal(q, P + past, dev)
        else:
            if attention_mask.shape != (B, past + q):
                raise ValueError(f"attention_mask must cover the real tokens only: expected shape {(B, past + q)}, "
                                 f"got {tuple(attention_mask.shape)}")
            am = attention_mask.bool()
            pos = P + (am.long().cumsum(-1) - 1).clamp(min=0)[:, -q:]
            keys_ok = torch.cat([am.new_ones(B, P), am], 1)[:, None, :]           # [B, 1, kv]
            allowed = keys_ok & self._causal(q, P + past, dev)                    # [B, q, kv]
            allowed[:, torch.arange(q), P + past + torch.arange(q)] = True        # pad rows see themselves: no NaN
            if q == 1 and bool(am.all()):
                allowed = None
        mask = self._mask(allowed)

        h = self.base.get_input_embeddings()(input_ids)
        cos_sin = self.base.model.rotary_emb(h, pos)
        plen = ([c.prefix_len for c in layer_cache.layers] if isinstance(layer_cache, MemoryCache)
                else [k.shape[-2] for k, _ in layer_cache.prefix] if layer_cache is not None else [0] * self.L)
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
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache)

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        """HF `generate` reading the memory: pass `use_memory=False` for the plain backbone. A fresh MemoryCache
        holds the memory prefix, so the caller never builds masks or positions for it."""
        self._check_ids(input_ids)
        kwargs.setdefault("past_key_values", MemoryCache())
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def _check_rows(self, rows, B):
        if rows.ndim != 4 or rows.shape[1] != self.L or rows.shape[3] != self.d or rows.shape[0] not in (1, B):
            raise ValueError(f"memory rows must be [B, L={self.L}, m, d={self.d}], got {tuple(rows.shape)}")

    # ------------------------------------------------------------------ write: inject_memory / write_memory
    def inject_memory(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      update_memory: bool = True, memory_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Compress a context into K new vectors per layer (e_θ^l', §3.1.2) and, if `update_memory`, commit them.
        Returns delta [B, L, K, d] (with gradient when grad is enabled). `memory_rows` [B, L, K, d] replaces the
        last K pool vectors as the write's prefix (training chains writes through it). B > 1 writes into B
        independent memories (see `expand_memories`); contexts in one batch must have equal length."""
        self._check_ids(input_ids, attention_mask, write=True)
        B = input_ids.shape[0]
        if memory_rows is not None:
            self._check_rows(memory_rows, B)
            if memory_rows.shape[2] != self.K:
                raise ValueError(f"memory_rows for a write must hold K={self.K} vectors per layer")
            last = memory_rows
        elif self.initialized:
            self._check_batch(B)
            last = self._pool[:, :, -self.K:]
        else:
            self._check_batch(B)
            last = None
        if last is not None and last.shape[0] != B:
            last = last.expand(B, -1, -1, -1)
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

    def _draw_keep(self, B: int) -> torch.Tensor:
        """Sorted indices of the N-K survivors, [B, L, N-K]: uniform without replacement, independent per layer
        (the authors' training code; their 7B inference shares one draw: drop_memory_per_layer=False)."""
        layers = self.L if self.config.drop_memory_per_layer else 1
        scores = torch.rand(B, layers, self.N, generator=self.generator)
        keep = scores.argsort(-1)[..., :self.N - self.K].sort(-1).values
        return keep.expand(B, self.L, -1).to(self._pool.device)

    @torch.no_grad()
    def write_memory(self, delta: torch.Tensor) -> None:
        """Commit delta [B, L, K, d]: drop K random vectors per layer, keep order, append delta (§3.1.2)."""
        if not isinstance(delta, torch.Tensor):
            raise TypeError(f"delta must be a torch.Tensor, got {type(delta).__name__}")
        if not delta.is_floating_point():
            raise TypeError(f"delta must be a floating-point tensor, got {delta.dtype}")
        B, L, N, K, d = self.num_memories, self.L, self.N, self.K, self.d
        ok_rows = delta.ndim == 4 and (delta.shape[2] == K or (not self.initialized and 1 <= delta.shape[2] <= K))
        if not ok_rows or delta.shape[0] != B or delta.shape[1] != L or delta.shape[3] != d:
            raise ValueError(f"delta must have shape [{B}, {L}, {K}, {d}] (memories, layers, K, d), "
                             f"got {tuple(delta.shape)}")
        if not bool(torch.isfinite(delta).all()):
            raise ValueError("delta contains non-finite values (nan/inf); the memory was not changed")
        delta = delta.detach().to(self._pool.dtype, copy=False)
        old_kv = self._pool_kv
        if not self.initialized:
            k = delta.shape[2]
            reps, rest = divmod(N, k)
            new = torch.cat([delta.repeat(1, 1, reps, 1), delta[:, :, k - rest:]], 2)
            keep = None
        else:
            keep = self._draw_keep(B)
            new = _drop_and_append(self._pool, keep, delta)
        # Incremental key/value update: gather survivors' projections, project only the K new vectors.
        new_kv = None
        if (keep is not None and old_kv is not None and self._cacheable()
                and old_kv.key == (id(self._pool), self._pool._version, self._weights_key())):
            nk, nv = self._project_pool_rows(delta, with_bos=False)
            nb = self._nb
            new_kv = (_drop_and_append(old_kv.raw_k, keep, nk, skip=nb, dim=3),
                      _drop_and_append(old_kv.v, keep, nv, skip=nb, dim=3))
        self._pool = new
        self.initialized = True
        self.last_keep = keep          # survivors of this write [B, L, N-K] (None for the first, tiling write)
        self._pool_kv = None
        if new_kv is not None:
            self._pool_kv = PoolKV((id(self._pool), self._pool._version, old_kv.key[2]), *new_kv)

    # ------------------------------------------------------------------ memory state management
    def reset_memory(self, num_memories: int | None = None) -> None:
        """Empty pool (uninitialized: the next write tiles). The generator is not reseeded."""
        B = num_memories or self.num_memories
        self._pool = torch.zeros(B, self.L, self.N, self.d, dtype=self._pool.dtype, device=self._pool.device)
        self.initialized = False
        self._pool_kv = None

    def expand_memories(self, num_memories: int) -> None:
        """Hold `num_memories` independent copies of the current pool (batched evaluation); 1 to go back."""
        if num_memories < 1:
            raise ValueError("num_memories must be >= 1")
        src = self._pool[:1]
        self._pool = src.expand(num_memories, -1, -1, -1).clone()
        self._pool_kv = None

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    @contextlib.contextmanager
    def memory_snapshot(self):
        """`with model.memory_snapshot(): ...` restores pool, generator and caches on exit (O(1): writes never
        modify the pool in place, so a reference is enough)."""
        state = (self._pool, self.initialized, self.generator.get_state(), self._pool_kv)
        try:
            yield self
        finally:
            self._pool, self.initialized, gen, self._pool_kv = state
            self.generator.set_state(gen)

    def _memory_meta(self) -> dict:
        return {"format": MEMORY_FORMAT, "L": self.L, "N": self.N, "K": self.K, "d": self.d,
                "num_blocks": self.config.num_blocks, "num_tokens": self.config.num_tokens}

    def save_memory(self, path) -> None:
        """Pool, initialized flag and generator state in one safetensors file."""
        tensors = {"memory": self._pool.contiguous(), "initialized": torch.tensor(int(self.initialized)),
                   "generator_state": self.generator.get_state()}
        meta = {k: str(v) for k, v in self._memory_meta().items()}
        save_file(tensors, str(path), metadata=meta)

    def load_memory(self, path) -> None:
        """Load a file written by save_memory; a file from a different config raises and changes nothing."""
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != MEMORY_FORMAT or "memory" not in tensors:
            raise ValueError(f"{path} is not a memoryllm-repro memory file")
        want = {k: str(v) for k, v in self._memory_meta().items()}
        diff = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
        if diff:
            raise ValueError(f"memory file {path} was saved for a different config: (file, model) = {diff}")
        mem = tensors["memory"]
        if mem.ndim != 4 or tuple(mem.shape[1:]) != (self.L, self.N, self.d):
            raise ValueError(f"memory tensor has shape {tuple(mem.shape)}")
        if not bool(torch.isfinite(mem).all()):
            raise ValueError(f"memory file {path} holds non-finite values")
        self._pool = mem.to(self._pool.dtype).to(self._pool.device)
        self.initialized = bool(tensors["initialized"].item())
        self.generator.set_state(tensors["generator_state"])
        self._pool_kv = None

    # ------------------------------------------------------------------ save / load
    def _own_state(self) -> dict:
        sd = {"bos_embedding": self.bos_embedding.detach(),
              "new_memory_positional_emb": self.new_memory_positional_emb.detach()}
        for name, p in self.base.named_parameters():
            if "lora_" in name:
                sd["base." + name] = p.detach()
        return sd

    def _backbone_state(self) -> dict:
        """Plain backbone weights (LoRA wrappers unwrapped, LoRA deltas not merged)."""
        sd = {}
        for name, t in self.base.state_dict().items():
            if "lora_" in name:
                continue
            sd[name.replace(".base_layer.", ".")] = t.contiguous()
        if getattr(self.base.config, "tie_word_embeddings", False):
            sd.pop("lm_head.weight", None)
        return sd

    def save_pretrained(self, save_directory, save_memory: bool = True, save_backbone: bool | None = None,
                        tokenizer=None, dtype: torch.dtype | None = None, save_tokenizer: bool = True, **_):
        """Write config, learned vectors + LoRA adapter, the memory (optional) and the tokenizer. The backbone is
        saved only when it cannot be found again by name (`config.backbone` is None) or when asked."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(out)
        own = {k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in self._own_state().items()}
        save_file(own, str(out / WEIGHTS_FILE), metadata={"format": "memoryllm-repro-v1"})
        if save_memory:
            self.save_memory(out / MEMORY_FILE)
        if save_backbone or (save_backbone is None and self.config.backbone is None):
            (out / "backbone").mkdir(exist_ok=True)
            self.base.config.save_pretrained(out / "backbone")
            save_file(self._backbone_state(), str(out / "backbone" / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is None and self.config.backbone is not None and save_tokenizer:
            try:
                tokenizer = load_tokenizer(self.config.backbone)
            except Exception as err:   # a hub id offline: the checkpoint is still complete without it
                warnings.warn(f"tokenizer not saved: {err}")
        if tokenizer is not None and save_tokenizer:
            tokenizer.save_pretrained(out)

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = torch.float32, attn_implementation: str = "sdpa",
                        load_memory: bool = True, **_):
        """Load a folder written by save_pretrained (local path, or a hub id fetched with huggingface_hub)."""
        local = Path(path)
        if not local.is_dir():
            from huggingface_hub import snapshot_download
            local = Path(snapshot_download(str(path)))
        cfg_dict = json.loads((local / "config.json").read_text())
        from .official import is_official, load_official
        if is_official(cfg_dict):      # the authors' format (YuWangX/memoryllm-7b): convert on load
            return load_official(local, dtype=dtype or torch.float32, attn_implementation=attn_implementation)
        if cfg_dict.get("model_type") != "memoryllm" or "backbone_config" not in cfg_dict:
            raise ValueError(f"{path} is not a memoryllm-repro checkpoint (no backbone_config in config.json)")
        config = MemoryLLMConfig.from_pretrained(local)
        if (local / "backbone").is_dir():
            base = load_backbone(str(local / "backbone"), dtype=dtype, attn_implementation=attn_implementation)
        elif config.backbone:
            base = load_backbone(config.backbone, dtype=dtype, attn_implementation=attn_implementation,
                                 rope_factor=getattr(config, "rope_factor", None))
        else:
            raise ValueError(f"{path} has neither a backbone folder nor a backbone name")
        model = cls(config, base)
        if config.lora:
            spec, config.lora = dict(config.lora), None
            model.add_lora(**spec)
        own = load_file(str(local / WEIGHTS_FILE))
        with torch.no_grad():
            model.bos_embedding.copy_(own.pop("bos_embedding"))
            model.new_memory_positional_emb.copy_(own.pop("new_memory_positional_emb"))
            if own:
                params = dict(model.named_parameters())
                missing = [k for k in own if k not in params]
                if missing:
                    raise ValueError(f"unexpected tensors in {WEIGHTS_FILE}: {missing[:5]}")
                for k, v in own.items():
                    params[k].copy_(v)
        if load_memory and (local / MEMORY_FILE).is_file():
            model.load_memory(local / MEMORY_FILE)
        elif load_memory and getattr(config, "warmup", None):
            model.eval().warm_up(**config.warmup)
        return model.eval()

    @torch.no_grad()
    def warm_up(self, source: str = "generic", num_writes: int | None = None, seed: int = 0,
                min_len: int = 64, max_len: int = 128, tokenizer=None) -> None:
        """Rebuild a warm pool deterministically: reset, then write `num_writes` (default N/K) chunks of the
        bundled generic text. Checkpoints store this recipe instead of a pool (66 MB for the small model)."""
        from .data.corpus import warmup_contexts
        tok = tokenizer or load_tokenizer(self.config.backbone or "smollm2-135m")
        self.reset_memory()
        self.seed(seed)
        for ids in warmup_contexts(tok, num_writes or self.config.num_blocks, seed, min_len, max_len, source):
            self.inject_memory(torch.tensor([ids], device=self.device))


def _drop_and_append(old: torch.Tensor, keep: torch.Tensor, fresh: torch.Tensor, skip: int = 0,
                     dim: int = 2) -> torch.Tensor:
    """One new tensor = [the first `skip` rows; rows `keep` of the rest; fresh] along `dim` (2 for the pool
    [B, L, N, d], 3 for cached keys/values [B, L, kvh, T, hd]), written in one pass: a gather then a cat would
    copy the whole pool twice per write."""
    B, L = keep.shape[:2]
    shape = list(old.shape)
    shape[dim] = skip + keep.shape[2] + fresh.shape[dim]
    out = old.new_empty(shape)
    for b in range(B):
        for l in range(L):
            src, dst = old[b, l], out[b, l]
            d = dim - 2
            if skip:
                dst.narrow(d, 0, skip).copy_(src.narrow(d, 0, skip))
            torch.index_select(src.narrow(d, skip, src.shape[d] - skip), d, keep[b, l],
                               out=dst.narrow(d, skip, keep.shape[2]))
            dst.narrow(d, skip + keep.shape[2], fresh.shape[dim]).copy_(fresh[b, l])
    return out


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
