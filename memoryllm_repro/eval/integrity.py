"""Operational integrity over (nearly) a million updates (paper §4.6, Figure 6), plus pool health.

Contexts of the retention set stream endlessly (reshuffled after every pass); after a write the model is asked
the question of the context it just wrote: after every write up to `dense_until`, then after every `ask_every`-th
(a 100,000-update CPU run asks 5,950 questions instead of 100,000; the write is most of what is left). Beyond
the paper we record, every `health_every` updates: per-layer norm statistics of the pool, the fraction of slots
written in the last N/K updates (expected 1 - (1 - K/N)^(N/K) ≈ 0.64), non-finite values, and whether an early
probe fact is still answered.

Kill-safe: `records.jsonl` and `health.jsonl` are append-only; every `checkpoint_every` updates the buffered rows
are appended and fsynced, then `state/` (pool, generator, slot birth times, position, file offsets, cumulative
seconds, the question schedule; safetensors and JSON, no pickle) is built in `state.tmp/` and renamed into place
(the previous one is kept as `state.old/` until then, and a start after a kill between the two renames recovers
it). A re-run truncates the files to the offsets in `state/` and continues from there, producing exactly the rows
an uninterrupted run would (the updates since the last checkpoint are recomputed identically); a re-run with
another schedule, seed, stream length, dtype or model (`model_fingerprint`) is refused.

    python -m memoryllm_repro.eval.integrity --model default --updates 1000 --out results/figure6_integrity
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

import torch

from .. import persistence
from ..data.qa import context_text, question_text
from .retention import _ids, answer, hit, wilson


def windowed_accuracy(hits, window: int) -> list[float]:
    """Running mean over the last `window` results (fewer at the start)."""
    out, total = [], 0.0
    for i, h in enumerate(hits):
        total += h
        if i >= window:
            total -= hits[i - window]
        out.append(total / min(i + 1, window))
    return out


def ema(hits, decay: float) -> list[float]:
    """Bias-corrected exponential moving average (the paper's "smoothed (99.99%)" is decay 0.9999)."""
    out, num, den = [], 0.0, 0.0
    for h in hits:
        num = decay * num + h
        den = decay * den + 1
        out.append(num / den)
    return out


def integrity_series(records, window: int, ema_decay: float, max_points: int = 2000):
    """Figure 6's tidy series: per update, the accuracy over the last `window` results with its 95% Wilson
    interval (n = the results in the window) and the EMA, thinned to at most `max_points` evenly spaced updates
    (the last one kept) so that a million-update run stays a small CSV."""
    import pandas as pd
    hits = records["hit"].astype(float).tolist()
    acc, smooth = windowed_accuracy(hits, window), ema(hits, ema_decay)
    step = max(1, -(-len(hits) // max_points))
    keep = sorted(set(range(step - 1, len(hits), step)) | ({len(hits) - 1} if hits else set()))
    rows = []
    for i in keep:
        n = min(i + 1, window)
        lo, hi = wilson(round(acc[i] * n), n)
        rows.append({"update": int(records["update"].iloc[i]), "accuracy": acc[i], "n": n, "ci_low": lo,
                     "ci_high": hi, "ema": smooth[i]})
    return pd.DataFrame(rows, columns=["update", "accuracy", "n", "ci_low", "ci_high", "ema"])


def _append(path: Path, rows: list[dict]) -> int:
    with path.open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path.stat().st_size


def _truncate(path: Path, size: int) -> None:
    if path.exists():
        with path.open("r+") as f:
            f.truncate(size)
    else:
        path.touch()


@torch.no_grad()
def health(model, birth: torch.Tensor, update: int) -> dict:
    pool = model.memory.float()
    norms = pool.norm(dim=-1)                                           # [L, N]
    layer_mean = norms.mean(-1)
    window = model.N // model.K
    return {"update": update, "norm_mean": layer_mean.mean().item(), "norm_layer_min": layer_mean.min().item(),
            "norm_layer_max": layer_mean.max().item(), "norm_std": norms.std(-1).mean().item(),
            "fresh_fraction": (birth > update - window).float().mean().item(),
            "nonfinite": int((~torch.isfinite(pool)).sum().item())}


def model_fingerprint(model) -> str:
    """A digest of the checkpoint a stream runs on: N, K, a non-default memory_positions, its trained tensors
    (LoRA, BOS and new-memory vectors) whole and a strided sample of every backbone tensor. Cheap (well under a second for SmolLM2), and a resumed
    stream then refuses a different model, e.g. after a new default checkpoint was installed mid-run."""
    h = hashlib.sha256(f"{model.N},{model.K}".encode())
    if model.config.memory_positions != "slot":     # reads differ; the default adds nothing (older streams resume)
        h.update(f"memory_positions={model.config.memory_positions}".encode())
    for name, p in sorted(model.named_parameters(), key=lambda x: x[0]):
        x = p.detach().reshape(-1)
        h.update(name.encode())
        h.update((x if persistence.is_learned(name) else x[::4099]).float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def asked(update: int, ask_every: int = 1, dense_until: int = 0) -> bool:
    """Whether the stream asks the question of update `update` (1-based)."""
    return ask_every <= 1 or update <= dense_until or update % ask_every == 0


def run_integrity(model, tok, examples, out_dir, total_updates: int, checkpoint_every: int = 100,
                  health_every: int = 25, probe=None, seed: int = 0, progress: bool = True,
                  ask_every: int = 1, dense_until: int = 0) -> Path:
    """Run (or resume) the stream until `total_updates`; returns the output folder. `state/meta.json` keeps the
    updates done and the cumulative seconds, so the cost per update survives restarts (`stream_status`)."""
    if ask_every < 1 or dense_until < 0 or checkpoint_every < 1 or health_every < 1:
        raise ValueError("ask_every, checkpoint_every and health_every must be >= 1, dense_until >= 0")
    from tqdm.auto import tqdm
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rec_path, health_path, state = out / "records.jsonl", out / "health.jsonl", out / "state"
    L, N = model.L, model.N
    tmp, old = out / "state.tmp", out / "state.old"
    if not state.exists() and (old / "meta.json").is_file():   # killed between the two renames below
        os.replace(old, state)
    shutil.rmtree(tmp, ignore_errors=True)                      # a killed checkpoint's leftovers
    shutil.rmtree(old, ignore_errors=True)
    persistence.remove_stale_temp(out)
    schedule = {"examples": len(examples), "seed": seed, "ask_every": ask_every, "dense_until": dense_until,
                "dtype": str(model.dtype).replace("torch.", ""), "model": model_fingerprint(model)}
    if (state / "meta.json").is_file():
        meta = json.loads((state / "meta.json").read_text())
        started = meta.get("schedule", {})
        # a resumed stream must go on as it started (a key its meta lacks predates that check: not compared)
        differ = sorted(k for k, v in schedule.items() if started.get(k, v) != v)
        if differ:
            raise ValueError(f"{out} holds a stream started with other {', '.join(differ)} ({started}, now "
                             f"{schedule}; \"model\" is the checkpoint's fingerprint): resume with the same settings "
                             "and model, or use another folder (the notebook: fresh=True)")
        birth = persistence.read_tensors(state / "birth.safetensors", "integrity state")[0].get("birth")
        if birth is None or birth.shape != (L, N) or birth.dtype != torch.long:
            raise ValueError(f"{state / 'birth.safetensors'} must hold birth: int64 [{L}, {N}]")
        model.load_memory(state / persistence.MEMORY_FILE)
        _truncate(rec_path, meta["records_bytes"])
        _truncate(health_path, meta["health_bytes"])
    else:
        meta = {"update": 0, "records_bytes": 0, "health_bytes": 0, "seconds": 0.0, "schedule": schedule}
        _truncate(rec_path, 0)
        _truncate(health_path, 0)
        if probe is not None:     # the early fact whose fading we follow
            model.inject_memory(_ids(tok, context_text(probe)).to(model.device))
        birth = torch.zeros(L, N, dtype=torch.long)
    u, seconds = meta["update"], meta.get("seconds", 0.0)
    ids = {}      # tokenized once per example: the stream revisits each context every pass
    rows, hrows = [], []
    bar = tqdm(total=total_updates, initial=u, desc="updates", disable=not progress)
    t0 = time.time()
    while u < total_updates:
        n = len(examples)
        order = list(range(n))
        random.Random(f"{seed}-pass-{u // n}").shuffle(order)
        i = order[u % n]
        ex = examples[i]
        if i not in ids:
            ids[i] = _ids(tok, context_text(ex)).to(model.device)
        model.inject_memory(ids[i])
        if model.last_keep is not None:
            keep = model.last_keep[0].cpu()
            birth = torch.cat([birth.gather(1, keep), torch.full((L, model.K), u + 1)], 1)
        u += 1
        if asked(u, ask_every, dense_until):
            pred = answer(model, tok, question_text(ex))
            rows.append({"update": u, "id": ex.id, "pass": (u - 1) // n, "hit": hit(pred, ex.answer)})
        if u % health_every == 0 or u == total_updates:
            h = health(model, birth, u)
            if probe is not None:
                h["probe_hit"] = hit(answer(model, tok, question_text(probe)), probe.answer)
            hrows.append(h)
        bar.update(1)
        if u % checkpoint_every == 0 or u == total_updates:
            meta = {"update": u, "records_bytes": _append(rec_path, rows),
                    "health_bytes": _append(health_path, hrows), "seconds": seconds + time.time() - t0,
                    "schedule": schedule}
            rows, hrows = [], []
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            model.save_memory(tmp / persistence.MEMORY_FILE)
            persistence.save_tensors({"birth": birth}, tmp / "birth.safetensors")
            persistence.write_text(tmp / "meta.json", json.dumps(meta))
            shutil.rmtree(old, ignore_errors=True)
            if state.exists():
                os.replace(state, old)
            os.replace(tmp, state)
            persistence.fsync_dir(out)
            shutil.rmtree(old, ignore_errors=True)
    bar.close()
    return out


def stream_status(out_dir) -> dict:
    """{"update": updates done at the last checkpoint, "seconds": their cumulative wall time} (zeros before one)."""
    path = Path(out_dir) / "state" / "meta.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    return {"update": int(meta.get("update", 0)), "seconds": float(meta.get("seconds", 0.0))}


def load_records(out_dir):
    import pandas as pd
    out = Path(out_dir)
    return (pd.read_json(out / "records.jsonl", lines=True), pd.read_json(out / "health.jsonl", lines=True))


def main(argv=None):
    import argparse

    from ..checkpoints import MODEL_SPEC_HELP, load_model
    from .retention import retention_data
    ap = argparse.ArgumentParser(
        prog="memoryllm-integrity", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Figure 6 (paper §4.6): write a stream of contexts into memory, one per update, ask the "
                    "question of the latest one after each write (or every --ask-every-th after --dense-until), "
                    "and record pool health. Kill-safe and "
                    "resumable: re-running with the same --out continues where the last checkpoint left off.",
        epilog="example:\n  memoryllm-integrity --model default --updates 1000 --out results/figure6_integrity")
    ap.add_argument("--model", default="default", help="the model: " + MODEL_SPEC_HELP)
    ap.add_argument("--updates", type=int, default=1000, help="total number of updates (writes) to reach (default 1000)")
    ap.add_argument("--examples", type=int, default=200,
                    help="contexts in the stream, reshuffled after every pass (default 200; one more is the probe fact)")
    ap.add_argument("--dataset", default="bundled", choices=["bundled", "squad", "nq"],
                    help="where the contexts come from: the bundled held-out set, or SQuAD / NQ files under data/")
    ap.add_argument("--checkpoint-every", type=int, default=100,
                    help="updates between checkpoints of pool, generator and file offsets (default 100)")
    ap.add_argument("--health-every", type=int, default=25,
                    help="updates between pool-health records and probe checks (default 25)")
    ap.add_argument("--ask-every", type=int, default=1,
                    help="after --dense-until, ask the question of every n-th update only (default 1: every update)")
    ap.add_argument("--dense-until", type=int, default=0,
                    help="ask after every update up to this one (default 0)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="weights and pool dtype (default float32)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default="results/figure6_integrity",
                    help="output and resume folder (records.jsonl, health.jsonl, state/)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the stream order (default 0)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model, tok, desc = load_model(a.model, dtype=a.dtype)
    examples, _ = retention_data(a.dataset, tok, a.examples + 1, 1, seed=2)
    run_integrity(model, tok, examples[1:], a.out, a.updates, a.checkpoint_every, a.health_every,
                  probe=examples[0], seed=a.seed, progress=os.environ.get("TQDM_DISABLE") != "1",
                  ask_every=a.ask_every, dense_until=a.dense_until)
    print(json.dumps({"model": desc, "out": a.out, **stream_status(a.out)}))


if __name__ == "__main__":
    main()
