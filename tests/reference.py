"""A naive MemoryLLM written straight from the paper and the authors' code, with explicit matmuls.

It reads only the raw weights of the HF modules, never their forward methods, so the library's use of HF layers,
caches, masks and RoPE is checked against an independent computation."""
import torch


def rms(x, w, eps):
    return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, pos, theta, hd):
    # RoPE angles in fp32, as HF (and the authors' later "force float32" fix) compute them
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = pos[:, None].float() * inv[None]
    ang = torch.cat([ang, ang], -1)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def layer_forward(layer, cfg, rows, n_query):
    """One decoder layer over rows [T, d]; only the last n_query rows get queries (the rest is a key/value-only
    prefix). Positions are 0..T-1. Returns the outputs of the query rows [n_query, d]."""
    T, d = rows.shape
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = d // H
    a = layer.self_attn
    x = rms(rows, layer.input_layernorm.weight, cfg.rms_norm_eps)
    pos = torch.arange(T)
    q = (x @ a.q_proj.weight.T).view(T, H, hd).transpose(0, 1)
    k = (x @ a.k_proj.weight.T).view(T, KV, hd).transpose(0, 1)
    v = (x @ a.v_proj.weight.T).view(T, KV, hd).transpose(0, 1)
    theta = cfg.rope_parameters["rope_theta"]
    q, k = rope(q, pos, theta, hd), rope(k, pos, theta, hd)
    k = k.repeat_interleave(H // KV, 0)
    v = v.repeat_interleave(H // KV, 0)
    P = T - n_query
    scores = (q[:, P:] @ k.transpose(1, 2)) / hd ** 0.5            # [H, n_query, T]
    allowed = torch.arange(T)[None, :] <= torch.arange(P, T)[:, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    att = scores.softmax(-1) @ v                                    # [H, n_query, hd]
    h = rows[P:] + att.transpose(0, 1).reshape(n_query, d) @ a.o_proj.weight.T
    y = rms(h, layer.post_attention_layernorm.weight, cfg.rms_norm_eps)
    m = layer.mlp
    y = (torch.nn.functional.silu(y @ m.gate_proj.weight.T) * (y @ m.up_proj.weight.T)) @ m.down_proj.weight.T
    return h + y


def read_logits(model, ids):
    """Reading (Fig. 1a): every layer sees [bos_l; θ_l; input] with the prefix as keys/values only."""
    base, cfg = model.base, model.base.config
    h = base.model.embed_tokens.weight[ids]
    n = ids.shape[0]
    for l, layer in enumerate(base.model.layers):
        rows = torch.cat([model.bos_embedding[l], model.memory[l], h])
        h = layer_forward(layer, cfg, rows, n)
    h = rms(h, base.model.norm.weight, cfg.rms_norm_eps)
    return h @ base.lm_head.weight.T


def write_delta(model, ids):
    """Writing (Fig. 1b, App. A.1): [bos_l; last K memory; context], e_new added to the last K rows of the layer
    input, queries from row min(n,K)+1 on, delta_l = last K outputs, next layer gets the last n outputs."""
    base, cfg, K = model.base, model.base.config, model.K
    h = base.model.embed_tokens.weight[ids]
    n = ids.shape[0]
    deltas = []
    for l, layer in enumerate(base.model.layers):
        rows = torch.cat([model.bos_embedding[l], model.memory[l, -K:], h])
        rows = torch.cat([rows[:-K], rows[-K:] + model.new_memory_positional_emb[0]])
        out = layer_forward(layer, cfg, rows, max(n, K))
        deltas.append(out[-K:])
        h = out[-n:]
    return torch.stack(deltas)
