"""Figure 7's models: the trained checkpoint of an ablation configuration (`resources/train_configs/ablation/`,
trained by `make ablations`), or, where none exists, a stand-in trained for a few steps on a tiny random model so
the pipeline still runs end to end. A stand-in says so (`trained=False`); nothing it produces may stand for a
result (the notebook never writes figures/ from one)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoints import latest_snapshot
from ..model import MemoryLLM
from ..paths import ROOT
from .loop import TrainConfig, Trainer


@dataclass
class AblationModel:
    model: MemoryLLM
    note: str          # the snapshot it came from, or "UNTRAINED stand-in (...)"
    trained: bool      # False for a stand-in


def ablation_model(name: str, use_checkpoint: bool = True, stand_in_steps: int = 3,
                   stand_in_dir: str | Path | None = None) -> AblationModel:
    """The newest snapshot of `ablation/<name>`'s training run (its `out_dir` under the working root), or a
    stand-in with the same N, K and memory source, trained `stand_in_steps` steps into `stand_in_dir/<name>`."""
    cfg = TrainConfig.load(f"ablation/{name}")
    snap = latest_snapshot(ROOT / cfg.out_dir) if use_checkpoint else None
    if snap is not None:
        return AblationModel(MemoryLLM.from_pretrained(snap).eval(), snap.name, True)
    if stand_in_dir is None:
        raise FileNotFoundError(f"no trained checkpoint under {ROOT / cfg.out_dir} and no stand_in_dir given")
    m = cfg.model
    tiny = TrainConfig.load(None, model=dict(backbone="tiny-random-llama", num_blocks=m.num_blocks,
                                             num_tokens=m.num_tokens, memory_source=m.memory_source),
                            steps=stand_in_steps, eval_every=0, out_dir=str(Path(stand_in_dir) / name),
                            min_len=24, max_len=48, save_every=1000)
    Trainer(tiny).train()
    model = MemoryLLM.from_pretrained(latest_snapshot(Path(tiny.out_dir))).eval()
    return AblationModel(model, f"UNTRAINED stand-in ({stand_in_steps} steps, tiny random model)", False)
