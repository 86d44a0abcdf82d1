"""Training φ to write and read memory (§3.2), on accelerate + peft LoRA, from a laptop CPU to multi-GPU.

    python -m memoryllm_repro.train --config small [--steps 300 --out_dir runs/x ...]
    accelerate launch --config_file configs/accelerate/ddp.yaml -m memoryllm_repro.train --config full

One optimizer step = `grad_accum` micro-batches of one document each (the authors' batch size 1). Per micro-batch
(the authors' training loop, github.com/wangyu-ustc/MemoryLLM, and Algorithm 1):
  * with probability 1/2, unless the previous step was one, a *mitigating-forgetting* step re-predicts a cached
    target;
  * otherwise k ~ U{1..C(step)} contexts are drawn (C is the curriculum); k = 1 is *new knowledge
    incorporation* (its two processes 50/50), k > 1 *continuous contexts understanding*;
  * after the step the contexts' new vectors are committed to the pool (no gradient). Under DDP every rank commits
    every rank's deltas in rank order with the same generator, so pools stay identical (the official code let
    ranks drift apart).
Snapshots (`out_dir/checkpoints/step-N`) are `save_pretrained` folders (config, learned vectors, LoRA adapter,
pool: `MemoryLLM.from_pretrained` loads one) with the trainer's state beside them: the optimizer, counters, RNG
and data-stream state as JSON + safetensors, never pickle. A killed run restarts from the newest one without
repeating finished steps.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from .. import persistence
from ..backbones import load_tokenizer
from ..data.corpus import DefaultSamples, chunk_document, load_texts
from ..data.generalist import GeneralistSamples
from ..model import MemoryLLM, MemoryLLMConfig
from . import objectives

from ..paths import TRAIN_CONFIGS as CONFIG_DIR


# The memory model's own fields (MemoryLLMConfig's arguments, backbone_config aside, which comes from the backbone).
MODEL_FIELDS = [n for n in inspect.signature(MemoryLLMConfig.__init__).parameters
                if n not in ("self", "kwargs", "backbone_config")]


def model_config(**fields) -> MemoryLLMConfig:
    """The model a run trains: MemoryLLMConfig fields, with the embedded backbone and the authors' LoRA by default."""
    unknown = set(fields) - set(MODEL_FIELDS)
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}; known: {MODEL_FIELDS}")
    fields = {"backbone": "smollm2-135m", "lora": dict(persistence.DEFAULT_LORA), **fields}
    return MemoryLLMConfig(**fields)


@dataclass
class TrainConfig:
    model: MemoryLLMConfig = field(default_factory=model_config)   # backbone φ, N, K, memory source, LoRA ...
    out_dir: str = "runs/small"
    init_from: str | None = None        # a snapshot folder of another run to continue from (a second stage)
    init_weights: str | None = None     # a model folder (e.g. the shipped default) whose LoRA and learned vectors
                                        # start this run; optimizer and data stream start fresh
    steps: int = 3000                   # optimizer steps
    grad_accum: int = 1                 # micro-batches (documents) per optimizer step
    lr: float = 1e-3                    # AdamW, constant (the authors used no schedule) unless decayed below
    # Our addition (0 = off, the paper): from step lr_decay_from the learning rate falls linearly to lr_final at
    # `steps`, so the last snapshot is not one noisy draw of a constant-rate walk (a resumed run may switch it on)
    lr_decay_from: int = 0
    lr_final: float = 0.0
    weight_decay: float = 0.01          # torch AdamW default, as the authors
    max_grad_norm: float = 1.0          # 0 disables clipping (the authors had none)
    train_bos: bool = False             # the BOS vectors stay fixed as in the authors' 7B run
    dtype: str = "float32"              # weights dtype
    mixed_precision: str = "no"         # accelerate: "no", "bf16", "fp16"
    samples: str = "default"            # bundled data when no corpus: "default" (fictional-world paragraphs and
                                        # generic text) or "generalist" (data/generalist.py: many forms and lengths)
    samples_options: dict = field(default_factory=dict)   # GeneralistMix fields for samples: generalist
    corpus: str | None = None           # a path or hub name (load_texts) instead of the bundled data
    text_field: str | None = None
    corpus_limit: int | None = 100000   # documents read from a user corpus
    min_len: int = 64                   # chunk lengths in tokens (authors: 256-512)
    max_len: int = 128
    p_generic: float = 0.3              # share of generic-text documents in the default corpus
    # Our addition (not in the paper, 0 = off): keep φ's general ability (official issue #12) by distilling the
    # untouched backbone: + kl_weight * KL(p_base(.|x) || p_φ(.|x)) on a generic chunk x every step, read with the
    # current pool with probability kl_memory (else with no memory). See MODEL_CARD.md for why it was needed.
    kl_weight: float = 0.0
    kl_memory: float = 0.5
    curriculum_steps: list = field(default_factory=lambda: [300, 600, 1000, 1500])
    curriculum_values: list = field(default_factory=lambda: [1, 2, 3, 4, 5])
    through_write_ratio: float = 0.5    # P(process (a)) in new knowledge incorporation
    # Our addition (off = the paper): continuous contexts also back-propagate through x_1's write, read after the
    # later writes' drops, so writes learn to survive losing vectors (objectives.continuous_contexts_understanding)
    grad_first_write: bool = False
    # Our addition (1 = the paper: every token of the target alike): the tokens of an answer count this many times
    # in the loss of samples that mark them ("answer_mask", generalist question targets); the rest of the target
    # (template, question) is predictable without the memory and otherwise carries ~80% of the loss.
    answer_weight: float = 1.0
    forgetting: bool = True             # Algorithm 1 replay steps
    save_every: int = 50                # optimizer steps between checkpoints
    keep_checkpoints: int = 2
    keep_every: int = 0                 # also never prune snapshots at multiples of this (eval_every: the validated)
    eval_every: int = 250               # 0 disables the retention validation
    eval_examples: int = 24
    eval_updates: int = 2
    eval_probes: str | None = None      # a preset of eval.probes ("quick") instead of the bundled retention set
    eval_warm_pool: bool = False        # probes also on the pool an export ships (warm-up recipe; keys "warm/...")
    log_nomem_loss: bool = True         # also log the target's loss without memory (new-knowledge steps)
    max_minutes: float = 0              # stop cleanly (with a checkpoint) after this long; 0 = no limit
    threads: int = 0                    # torch CPU threads (0 = default); 1 when sharing 2 cores with other work
    seed: int = 0

    @classmethod
    def load(cls, name_or_path: str | None = None, **overrides) -> "TrainConfig":
        """A preset name (memoryllm_repro/resources/train_configs/<name>.yaml) or a yaml path, then overrides;
        model fields go under `model:` in yaml and as `model.<field>` (or a `model` dict) in overrides."""
        values = {}
        if name_or_path:
            path = Path(name_or_path)
            if not path.is_file():
                path = CONFIG_DIR / f"{name_or_path}.yaml"
            values = yaml.safe_load(path.read_text()) or {}
        model = dict(values.pop("model", None) or {})
        model.update(overrides.pop("model", None) or {})
        for k in [k for k in overrides if k.startswith("model.")]:
            model[k[len("model."):]] = overrides.pop(k)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names) + sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}")
        return cls(**{**values, **overrides, "model": model})

    def __post_init__(self):
        if isinstance(self.model, dict):           # TrainConfig(model=dict(num_blocks=4, ...)) as in yaml
            self.model = model_config(**self.model)
        if not (isinstance(self.answer_weight, (int, float)) and 0 < self.answer_weight < float("inf")):
            raise ValueError(f"answer_weight must be a positive number, got {self.answer_weight!r}")
        if self.eval_warm_pool and not self.eval_probes:
            raise ValueError("eval_warm_pool re-runs the probes on a warm pool: it needs eval_probes (e.g. 'distance')")
        if not (isinstance(self.keep_every, int) and self.keep_every >= 0):
            raise ValueError(f"keep_every must be an integer >= 0, got {self.keep_every!r}")
        if not (isinstance(self.lr_decay_from, int) and 0 <= self.lr_decay_from < max(self.steps, 1)):
            raise ValueError(f"lr_decay_from must be an integer in [0, steps), got {self.lr_decay_from!r}")
        if not (isinstance(self.lr_final, (int, float)) and 0 <= self.lr_final <= self.lr):
            raise ValueError(f"lr_final must be a number in [0, lr], got {self.lr_final!r}")

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` + 1 (`step` steps done)."""
        if not self.lr_decay_from or step < self.lr_decay_from:
            return self.lr
        frac = (step - self.lr_decay_from) / (self.steps - self.lr_decay_from)
        return self.lr + (self.lr_final - self.lr) * min(frac, 1.0)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = {n: getattr(self.model, n) for n in MODEL_FIELDS}
        return d


def num_contexts(step: int, cfg: TrainConfig) -> int:
    """Curriculum C(step): values[i] with i = number of checkpoints strictly below step (the authors' rule)."""
    return cfg.curriculum_values[sum(step > s for s in cfg.curriculum_steps)]


TRAINER_FORMAT = "memoryllm-repro-trainer-v1"
TRAINER_STATE = "trainer_state.json"
TRAINER_TENSORS = "trainer_state.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


def optimizer_state(opt, names: list[str]) -> tuple[dict, dict]:
    """An optimizer's state_dict as flat tensors + JSON (no pickle). Parameters are recorded by name."""
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "param_names": names}


def load_optimizer_state(tensors: dict, meta: dict, names: list[str], where) -> dict:
    if meta.get("param_names") != names:
        raise ValueError(f"{where}: the optimizer was saved for other trainable parameters")
    state: dict = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def _record_step(line: str):
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):   # a line torn by a kill mid-write
        return None


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Drop the records of steps after `max_step` (they are redone after a resume) and lines torn by a kill,
    atomically; of records of one step only the first is kept."""
    if not path.exists():
        return
    kept, seen = [], set()
    for line in path.read_text().splitlines():
        step = _record_step(line)
        if step is not None and step <= max_step and step not in seen:
            kept.append(line)
            seen.add(step)
    persistence.write_text(path, "".join(l + "\n" for l in kept))


def append_jsonl(path: Path, record: dict) -> None:
    """One record, flushed and fsynced: a kill loses at most this line (a torn tail is dropped on resume)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class CorpusSamples:
    """Samples from any text corpus with the authors' chunker; sample i is a pure function of (seed, i)."""

    def __init__(self, tokenizer, texts, seed=0, min_len=256, max_len=512):
        self.tok, self.texts, self.seed, self.min_len, self.max_len = tokenizer, texts, seed, min_len, max_len

    def sample(self, index: int, k: int) -> dict:
        rng = random.Random(f"{self.seed}-{index}")
        for _ in range(50):
            ids = self.tok(rng.choice(self.texts), add_special_tokens=False).input_ids
            chunks = chunk_document(ids, self.min_len, self.max_len, rng)
            if len(chunks) >= 2:
                chunks = chunks[-(k + 1):]
                return {"contexts": chunks[:-1], "target": chunks[-1], "kind": "corpus"}
        raise ValueError("corpus documents are too short to chunk; lower min_len/max_len")

    def regularizer(self, index: int) -> list[int]:
        """A chunk of general text for the distillation term (any corpus chunk)."""
        return self.sample(-(10 ** 9) - index, 1)["target"]


class Objective(nn.Module):
    """The unit DDP wraps: forward runs one objective and returns (loss, deltas to commit)."""

    def __init__(self, model: MemoryLLM):
        super().__init__()
        self.model = model

    def forward(self, plan: dict, generator: torch.Generator):
        m = self.model
        if plan["kind"] == "forgetting":
            loss, deltas = objectives.mitigating_forgetting(m, plan["target"], plan.get("weights"))
        elif len(plan["contexts"]) == 1:
            loss, deltas = objectives.new_knowledge_incorporation(m, plan["contexts"][0], plan["target"],
                                                                  plan["through_write"], generator, plan.get("weights"))
        else:
            loss, deltas = objectives.continuous_contexts_understanding(m, plan["contexts"], plan["target"],
                                                                        generator, plan.get("grad_first_write", False),
                                                                        plan.get("weights"))
        if plan.get("kl_ids") is not None:   # inside the DDP-wrapped forward so its gradient is synced too
            kl = objectives.base_distillation(m, plan["kl_ids"], plan["kl_use_memory"])
            plan["kl"] = kl.item()
            loss = loss + plan["kl_weight"] * kl
        return loss, deltas


def build_model(cfg: TrainConfig) -> MemoryLLM:
    fields = {n: getattr(cfg.model, n) for n in MODEL_FIELDS if n not in ("backbone", "lora")}
    model = MemoryLLM.from_base(cfg.model.backbone, dtype=getattr(torch, cfg.dtype), **fields)
    model.add_lora(**(cfg.model.lora or {}))
    for n, p in model.named_parameters():
        p.requires_grad = ("lora_" in n or n == "new_memory_positional_emb"
                           or (cfg.train_bos and n == "bos_embedding"))
    return model


class Trainer:
    def __init__(self, cfg: TrainConfig, model: MemoryLLM | None = None, tokenizer=None, samples=None,
                 accelerator=None):
        from accelerate import Accelerator, DistributedDataParallelKwargs
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.acc = accelerator or Accelerator(
            mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
            cpu=not torch.cuda.is_available(),   # CPU-only: multi-process runs use gloo
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.out = Path(cfg.out_dir)
        self.tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.model.backbone)
        self.model = (model or build_model(cfg)).to(self.acc.device)
        if samples is None:
            if cfg.corpus:
                texts = load_texts(cfg.corpus, text_field=cfg.text_field, limit=cfg.corpus_limit)
                samples = CorpusSamples(self.tok, texts, cfg.seed, cfg.min_len, cfg.max_len)
            elif cfg.samples == "generalist":
                samples = GeneralistSamples(self.tok, cfg.seed, mix=cfg.samples_options)
            elif cfg.samples == "default":
                samples = DefaultSamples(self.tok, cfg.seed, cfg.min_len, cfg.max_len, cfg.p_generic)
            else:
                raise ValueError(f"samples must be 'default' or 'generalist', got {cfg.samples!r}")
        self.samples = samples
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.runner, self.opt = self.acc.prepare(Objective(self.model), self.opt)
        # trainer state; `rng` decides objectives, `gen` draws pool subsets (same on every rank)
        self.state = {"step": 0, "micro": 0, "last_indicator": 1, "nuc": 0, "cached": None, "cached_mask": None}
        self.rng = random.Random(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    # ---------------------------------------------------------------- snapshots
    def save(self) -> Path:
        """Write `step-N` atomically: a model folder plus the trainer's state, built in `step-N.tmp`, then renamed
        (a kill leaves the previous snapshot intact and at most a stale .tmp, removed on the next start)."""
        final = self.out / "checkpoints" / f"step-{self.state['step']:07d}"
        tmp = final.with_name(final.name + ".tmp")
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.model.save_pretrained(tmp, save_tokenizer=False, model_card=False)
            tensors = {"gen": self.gen.get_state(), "torch_rng": torch.get_rng_state()}
            for k in ("cached", "cached_mask"):
                if self.state.get(k) is not None:
                    tensors[k] = self.state[k]
            if torch.cuda.is_available():
                tensors["cuda_rng"] = torch.cuda.get_rng_state()
            persistence.save_tensors(tensors, tmp / TRAINER_TENSORS)
            opt_tensors, opt_meta = optimizer_state(self.opt, self._trainable_names())
            persistence.save_tensors(opt_tensors, tmp / OPTIMIZER_FILE)
            st = {k: v for k, v in self.state.items() if k not in ("cached", "cached_mask")}
            rng = self.rng.getstate()
            persistence.write_text(tmp / TRAINER_STATE, json.dumps(
                {"format": TRAINER_FORMAT, "state": st, "python_rng": [rng[0], list(rng[1]), rng[2]],
                 "optimizer": opt_meta, "train_config": self.cfg.to_dict()}, indent=1, default=str))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            persistence.fsync_dir(final.parent)
            every = self.cfg.keep_every
            for old in persistence.snapshots(self.out)[:-self.cfg.keep_checkpoints]:
                if every and persistence.snapshot_step(old) % every == 0:
                    continue
                doomed = old.with_name(old.name + ".old.tmp")   # renamed first: a kill mid-delete leaves a .tmp
                os.replace(old, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
        self.acc.wait_for_everyone()
        return final

    def _trainable_names(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def resume(self) -> bool:
        """Continue from the newest snapshot (True), else start fresh (False). Either way the run folder is
        first cleaned of a killed save's leftovers, and log lines of steps that will be redone are dropped."""
        ckpts = self.out / "checkpoints"
        if self.acc.is_main_process:          # leftovers of a kill during a save
            for stale in ckpts.glob("*.tmp") if ckpts.is_dir() else []:
                _remove(stale)
            persistence.remove_stale_temp(self.out)
        self.acc.wait_for_everyone()
        snaps = persistence.snapshots(self.out)
        if not snaps and self.cfg.init_from:   # a new stage starts from another run's snapshot (copied)
            src = Path(self.cfg.init_from)
            if not (src / TRAINER_STATE).is_file():
                raise FileNotFoundError(f"init_from={src} is not a training snapshot (no {TRAINER_STATE})")
            if self.acc.is_main_process:
                tmp = self.out / "checkpoints" / (src.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(src, tmp)
                os.replace(tmp, tmp.with_name(src.name))
            self.acc.wait_for_everyone()
            snaps = persistence.snapshots(self.out)
        if not snaps:
            if self.acc.is_main_process:      # a kill before the first snapshot: those steps are redone
                for name in ("log.jsonl", "val.jsonl"):
                    truncate_jsonl(self.out / name, 0)
            return False
        snap = snaps[-1]
        try:
            meta = json.loads((snap / TRAINER_STATE).read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{snap / TRAINER_STATE} is not a JSON trainer state: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != TRAINER_FORMAT:
            raise ValueError(f"{snap}: unknown trainer state format "
                             f"{meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r}")
        tensors, _ = persistence.read_tensors(snap / TRAINER_TENSORS, "trainer state")
        opt_state = load_optimizer_state(persistence.read_tensors(snap / OPTIMIZER_FILE, "optimizer state")[0],
                                         meta["optimizer"], self._trainable_names(), snap)
        persistence.load_weights(self.model, snap)       # checked: exact keys and shapes
        self.model.load_memory(snap / persistence.MEMORY_FILE)
        self.opt.load_state_dict(opt_state)
        self.state = dict(meta["state"], cached=tensors.get("cached"), cached_mask=tensors.get("cached_mask"))
        v, internal, gauss = meta["python_rng"]
        self.rng.setstate((v, tuple(internal), gauss))
        self.gen.set_state(tensors["gen"])
        torch.set_rng_state(tensors["torch_rng"])        # LoRA dropout draws from it
        if "cuda_rng" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["cuda_rng"])
        if self.acc.is_main_process:          # steps logged after the snapshot are redone: drop their lines
            for name in ("log.jsonl", "val.jsonl"):
                truncate_jsonl(self.out / name, self.state["step"])
        return True

    # ---------------------------------------------------------------- one micro-batch
    def _tensor(self, ids):
        return torch.tensor([ids], dtype=torch.long, device=self.acc.device)

    def plan(self) -> dict:
        """Choose the objective of the next micro-batch (Algorithm 1 + curriculum + 50/50 processes)."""
        st, cfg = self.state, self.cfg
        if not cfg.forgetting or st["last_indicator"] == 1 or st["nuc"] == 0 or st["cached"] is None:
            indicator = 0
        else:
            indicator = self.rng.randint(0, 1)
        through_write = self.rng.random() < cfg.through_write_ratio
        k = self.rng.randint(1, num_contexts(st["step"], cfg))
        index = st["micro"] * self.acc.num_processes + self.acc.process_index
        st["micro"] += 1
        extra = {}
        if cfg.kl_weight:
            extra = {"kl_ids": self._tensor(self.samples.regularizer(index)), "kl_weight": cfg.kl_weight,
                     "kl_use_memory": self.rng.random() < cfg.kl_memory}
        if indicator == 1:     # the replayed target keeps its answer mask: weighted as the config says now
            mask = None if st.get("cached_mask") is None else st["cached_mask"].to(self.acc.device)
            return {"kind": "forgetting", "target": st["cached"].to(self.acc.device), "indicator": 1,
                    **self._weighted(mask), **extra}
        s = self.samples.sample(index, k)
        mask = None if s.get("answer_mask") is None else self._tensor(s["answer_mask"]).float()
        return {"kind": s["kind"], "contexts": [self._tensor(c) for c in s["contexts"]],
                "target": self._tensor(s["target"]), "through_write": through_write, "indicator": 0,
                "grad_first_write": cfg.grad_first_write, **self._weighted(mask), **extra}

    def _weighted(self, mask) -> dict:
        """The plan's answer mask, and its loss weights when answer_weight != 1 (TrainConfig.answer_weight)."""
        if mask is None:
            return {}
        w = self.cfg.answer_weight
        return {"answer_mask": mask, **({"weights": 1 + (w - 1) * mask} if w != 1 else {})}

    def commit(self, deltas: list[torch.Tensor]) -> None:
        """Write this step's deltas into the pool; under DDP every rank writes all ranks' deltas in rank order."""
        if self.acc.num_processes > 1:
            from accelerate.utils import gather_object
            gathered = gather_object([[d.cpu() for d in deltas]])
            deltas = [d.to(self.acc.device) for per_rank in gathered for d in per_rank]
        for d in deltas:
            self.model.write_memory(d)

    def warm_pool(self) -> None:
        """Fill the pool before training (the authors' run got its first write from a validation pass): write
        N/K contexts from a separate sample stream, in order, without gradient."""
        with torch.no_grad():
            for i in range(self.cfg.model.num_blocks):
                s = self.samples.sample(-1 - i, 1)
                self.model.inject_memory(self._tensor(s["contexts"][0]))

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def validate(self) -> dict:
        """Retention on held-out facts (the pool is restored afterwards): the diagnostic probes of eval.probes
        (natural dev facts, never trained on) when `eval_probes` names a preset, else the bundled world set."""
        self.model.eval()
        if self.cfg.eval_probes:
            from ..eval.probes import run_probes
            pools = {"": None}
            if self.cfg.eval_warm_pool:
                # The trained pool holds the training stream's own facts, which a read can answer with; an export
                # ships a recipe instead (persistence.export_warmup), so that pool is what a user reads with.
                pools["warm/"] = persistence.export_warmup(self.model.config)
            out = {}
            for prefix, recipe in pools.items():
                with self.model.memory_snapshot():
                    if recipe:
                        self.model.warm_up(**recipe, tokenizer=self.tok)
                    df = run_probes(self.model, self.tok, self.cfg.eval_probes, progress=False)
                out.update({f"{prefix}{r.probe}/{r.setting}": r.accuracy for r in df.itertuples()})
                out.update({f"{prefix}{r.probe}/{r.setting}/nll": round(r.answer_nll, 4) for r in df.itertuples()})
        else:
            from ..data.retention_set import heldout_retention_set
            from ..eval.retention import run_retention
            examples, distractors = heldout_retention_set(self.cfg.eval_examples, n_distractors=10, seed=1)
            rows = run_retention(self.model, self.tok, examples, distractors, self.cfg.eval_updates,
                                 progress=False)
            out = {}
            for r in rows:
                key = "borderline" if r["condition"] == "borderline" else f"acc_step{r['step']}"
                out.setdefault(key, []).append(r["hit"])
            out = {k: sum(v) / len(v) for k, v in out.items()}
        if getattr(self.samples, "generic_heldout", None):
            from ..eval.lm import perplexity   # the general-ability check, on 10 held-out generic documents
            docs = self.samples.generic_heldout[:10]
            out["ppl_no_memory"] = perplexity(self.model, self.tok, docs, use_memory=False, max_tokens=256)
            with self.model.adapters_disabled():   # its baseline on the same documents: the backbone itself
                out["ppl_backbone"] = perplexity(self.model, self.tok, docs, use_memory=False, max_tokens=256)
        self.model.train()
        return out

    # ---------------------------------------------------------------- the loop
    def train(self) -> dict:
        cfg, acc = self.cfg, self.acc
        self.out.mkdir(parents=True, exist_ok=True)
        resumed = self.resume()
        st = self.state
        if not resumed:
            if cfg.init_weights:
                # checked (same LoRA spec and shapes, finite after the cast); an exported fp16 checkpoint is cast up
                persistence.load_weights(self.model, Path(cfg.init_weights), cast=True)
            self.warm_pool()
            if acc.is_main_process:
                persistence.write_text(self.out / "train_config.json", json.dumps(cfg.to_dict(), indent=1))
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=st["step"], desc="train",
                   disable=not acc.is_local_main_process or os.environ.get("TQDM_DISABLE") == "1")
        log = (self.out / "log.jsonl").open("a") if acc.is_main_process else None
        t_start, last_save = time.time(), st["step"]
        self.model.train()
        while st["step"] < cfg.steps:
            t0 = time.time()
            for g in self.opt.param_groups:      # the config's schedule, also over the rate a snapshot saved
                g["lr"] = cfg.lr_at(st["step"])
            plan = self.plan()
            with acc.accumulate(self.runner):
                loss, deltas = self.runner(plan, self.gen)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm)
                self.opt.step()
                self.opt.zero_grad()
            nomem = None
            if cfg.log_nomem_loss and plan["kind"] != "forgetting" and len(plan["contexts"]) == 1:
                with torch.no_grad():
                    nomem = self.model(plan["target"], labels=plan["target"], use_memory=False).loss.item()
            self.commit(deltas)
            k = len(plan.get("contexts", []))
            if plan["indicator"] == 0:
                if st["last_indicator"] == 1:
                    st["cached"], st["nuc"] = plan["target"].cpu(), 0
                    st["cached_mask"] = plan["answer_mask"].cpu() if plan.get("answer_mask") is not None else None
                else:
                    st["nuc"] += k
            st["last_indicator"] = plan["indicator"]
            if not acc.sync_gradients:
                continue
            st["step"] += 1
            bar.update(1)
            objective = ("forgetting" if plan["kind"] == "forgetting" else
                         ("new_knowledge_" + ("write_grad" if plan["through_write"] else "full_pool")) if k == 1
                         else f"continuous_{k}")
            rec = {"step": st["step"], "objective": objective, "kind": plan["kind"], "loss": loss.item(),
                   **({"lr": self.opt.param_groups[0]["lr"]} if cfg.lr_decay_from else {}),
                   "loss_nomem": nomem, "kl": plan.get("kl"), "sec": round(time.time() - t0, 3),
                   "target_tokens": int(plan["target"].shape[1]),
                   "tokens": int(plan["target"].shape[1]) + sum(int(c.shape[1]) for c in plan.get("contexts", []))}
            if log:
                log.write(json.dumps(rec) + "\n")
                log.flush()
            bar.set_postfix(loss=f"{rec['loss']:.3f}", obj=objective[:12])
            if cfg.eval_every and st["step"] % cfg.eval_every == 0 and acc.is_main_process:
                append_jsonl(self.out / "val.jsonl", {"step": st["step"], **self.validate()})
            out_of_time = cfg.max_minutes and (time.time() - t_start) / 60 > cfg.max_minutes
            kept = cfg.keep_every and st["step"] % cfg.keep_every == 0   # saved even off the save_every grid
            if st["step"] - last_save >= cfg.save_every or st["step"] == cfg.steps or out_of_time or kept:
                self.save()
                last_save = st["step"]
            if out_of_time:
                break
        bar.close()
        if log:
            log.close()
        return {"step": st["step"], "done": st["step"] >= cfg.steps}


def _parse_value(text: str):
    val = yaml.safe_load(text)
    if isinstance(val, str):      # YAML 1.1 reads "5e-4" as a string
        try:
            val = float(val)
        except ValueError:
            pass
    return val


def arg_parser():
    """Every TrainConfig field and every model field (`--model.<field>`) with its default, for --help."""
    import argparse
    ap = argparse.ArgumentParser(
        prog="python -m memoryllm_repro.train", allow_abbrev=False,
        description="Train MemoryLLM (LoRA + new-memory vector) with the paper's three objectives. Values are "
                    "parsed as YAML (numbers, lists like [1,2], null).",
        epilog="Snapshots go to <out_dir>/checkpoints/step-N (a model folder: MemoryLLM.from_pretrained loads it); "
               "re-running the same command resumes from the newest one.")
    ap.add_argument("--config", default="small", help="preset under memoryllm_repro/resources/train_configs/ "
                    "(small, generalist, full, ablation/k64_n10, ...) or a yaml path (default: small)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name != "model":
            ap.add_argument(f"--{f.name}", metavar="V", help=f"(default: {getattr(defaults, f.name)!r})")
    sig = inspect.signature(MemoryLLMConfig.__init__).parameters
    for n in MODEL_FIELDS:
        d = getattr(defaults.model, n)
        ap.add_argument(f"--model.{n}", metavar="V", help=f"MemoryLLMConfig.{n} (default: {d!r}; "
                        f"class default {sig[n].default!r})")
    return ap


def parse_args(argv=None) -> TrainConfig:
    args = arg_parser().parse_args(argv)
    given = {k: _parse_value(v) for k, v in vars(args).items() if v is not None and k != "config"}
    return TrainConfig.load(args.config, **given)


def main(argv=None):
    cfg = parse_args(argv)
    result = Trainer(cfg).train()
    print(json.dumps(result))


__all__ = ["TrainConfig", "Trainer", "main", "num_contexts", "model_config"]
