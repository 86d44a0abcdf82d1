"""Training step in bf16 autocast vs fp32 on this machine: same init, same data order, same steps, one process.

    python bench/train_precision.py --steps 30 --threads 2 [--config generalist]
Prints seconds per step (median over the steps, per-step ratio bf16/fp32 on identical samples) and the loss curves
side by side, so the faster mode is adopted only if its losses track fp32's."""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import torch

from memoryllm_repro.train.loop import TrainConfig, Trainer


def run(mode: str, args, out: str) -> list[dict]:
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(True)    # accelerate keeps one global state per process: start each mode afresh
    cfg = TrainConfig.load(args.config, out_dir=out, steps=args.steps, mixed_precision=mode, eval_every=0,
                           save_every=10 ** 9, threads=args.threads, max_minutes=0)
    tr = Trainer(cfg)
    tr.train()
    return [json.loads(line) for line in open(f"{out}/log.jsonl")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="generalist")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logs = {}
    for mode in ("no", "bf16"):
        with tempfile.TemporaryDirectory() as d:
            logs[mode] = run(mode, args, d)
    a, b = logs["no"], logs["bf16"]
    ratio = [y["sec"] / x["sec"] for x, y in zip(a, b)]
    print("step objective tokens fp32_loss bf16_loss fp32_s bf16_s")
    for x, y in zip(a, b):
        print(x["step"], x["objective"], x["tokens"], f"{x['loss']:.3f}", f"{y['loss']:.3f}", x["sec"], y["sec"])
    print(json.dumps({"steps": len(a), "threads": args.threads, "torch": torch.__version__,
                      "fp32_median_s": statistics.median(r["sec"] for r in a),
                      "bf16_median_s": statistics.median(r["sec"] for r in b),
                      "median_step_ratio_bf16_over_fp32": statistics.median(ratio),
                      "fp32_mean_loss": statistics.mean(r["loss"] for r in a),
                      "bf16_mean_loss": statistics.mean(r["loss"] for r in b),
                      "max_abs_loss_diff": max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))}, indent=1))


if __name__ == "__main__":
    main()
