# %% [markdown]
# # Figure 6: operational integrity over (nearly) a million updates
#
# Paper §4.6 (our summary): contexts of the retention sets are written one after another, endlessly (the set is
# reshuffled after every pass); after each write the model is asked the question of the context it has just
# written. The authors plot the running accuracy over the last 2,250 (SQuAD) / 1,004 (NQ) results and a
# 99.99% exponential moving average; it does not decline over 650k updates (3 days on their hardware).
#
# What the paper did not plot, and we add: the health of the pool over time (norms, the share of slots written
# in the last N/K updates, non-finite values) and whether an early probe fact, written before the stream,
# is still answered (it should fade like (1 - K/N)^t).
#
# The run is kill-safe and resumable: re-running the notebook (or `python -m memoryllm_repro.eval.integrity`)
# continues from the last checkpoint in the results folder; a finished stream is only re-drawn
# (`memoryllm_repro.figures.figure6`). `make figure6 FULL=1` is the 1,000,000-update run.

# %% tags=["parameters"]
model = "default"
dataset = "bundled"
num_examples = 200           # contexts in the stream; one pass is this many updates
updates = 100_000            # the CPU default: hours in the background, resumable (README, Figure 6)
ask_every = 20               # after dense_until, ask the question of every 20th update only (the write is the cost)
dense_until = 1_000          # ask after every update up to here
window = 250                 # running-accuracy window, in questions asked (paper: 2,250 SQuAD / 1,004 NQ)
ema_decay = 0.999            # per question asked (paper: 0.9999 over 650k updates)
checkpoint_every = 1_000
health_every = 100
seed = 0
device = "cpu"
dtype = "bfloat16"           # with avx512_bf16 2x faster writes than float32; on AVX2-only CPUs 5x slower: use float32
threads = 0                  # torch CPU threads (0: torch's choice)
results = None               # default: results/figure6_integrity
fresh = False                # True: delete earlier results and start over
figure_name = "figure6_integrity"   # None: do not write figures/ (never written from a stand-in model)
recompute = False            # False: re-draw from results/figure6_integrity when it holds a run with these parameters

# %%
import json
import shutil

import matplotlib.pyplot as plt
import torch

from memoryllm_repro.checkpoints import is_stand_in, load_model
from memoryllm_repro.eval.integrity import integrity_series, load_records, run_integrity, stream_status
from memoryllm_repro.eval.retention import retention_data
from memoryllm_repro.figures import figure6
from memoryllm_repro.plotting import savefig
from memoryllm_repro.results import REPO, notebook_params, results_dir, reuse_run, write_run

params = notebook_params(globals(), "figure6_integrity")
out = results_dir("figure6_integrity", results)
if fresh:
    shutil.rmtree(out)
    out = results_dir("figure6_integrity", results)
earlier = None if recompute or fresh else reuse_run(out, params,
                                                      ignore=("recompute", "figure_name", "fresh", "threads"))
if earlier is None or stream_status(out / "run")["update"] < updates:
    if threads:
        torch.set_num_threads(threads)
    net, tok, description = load_model(model, device=device, dtype=dtype)
    N, K = net.N, net.K
    examples, _ = retention_data(dataset, tok, num_examples + 1, 1, seed=2)
    probe, stream = examples[0], examples[1:]
    run_integrity(net, tok, stream, out / "run", updates, checkpoint_every, health_every, probe=probe, seed=seed,
                  ask_every=ask_every, dense_until=dense_until)
    records, health = load_records(out / "run")
    status = stream_status(out / "run")      # cumulative over every call that built this stream
    write_run(out, records.to_dict("records"), params,
              extra={"model_description": description, "N": N, "K": K, **status})
    per_update = status["seconds"] / max(status["update"], 1)
    print(f"{status['update']:,} updates ({len(records):,} questions asked) in {status['seconds'] / 3600:.2f} h: "
          f"{per_update:.3f} s per update -> 1,000,000 updates would take {per_update * 1e6 / 86400:.1f} days")
else:   # the same stream, already on disk: only re-draw
    _, recorded = earlier
    records, health = load_records(out / "run")
    description, N, K = (recorded[k] for k in ("model_description", "N", "K"))
    status = stream_status(out / "run")
    print(f"re-drawing the run in {out} (recompute=True to run it again)")

# %%
series = integrity_series(records, window, ema_decay)
asking = ("asked after every update" if ask_every == 1 or dense_until >= updates else
          f"asked after each of the first {dense_until:,}, then after every {ask_every}th")
caption = (f"{description}, {dtype}; N = {N}, K = {K}; {dataset} stream of {num_examples} contexts, "
           f"{status['update']:,} updates ({asking}: {len(records):,} questions), "
           f"{status['seconds'] / max(status['update'], 1):.3f} s per update on {device}; "
           f"non-finite values seen: {int(health.nonfinite.sum())}")
fig = figure6(series, health, N, K, window=window, ema_decay=ema_decay, dataset=dataset, caption=caption)
if figure_name and not is_stand_in(description):   # the figure and the (thinned) numbers behind it
    print(savefig(fig, figure_name))
    series.to_csv(REPO / "figures" / f"{figure_name}.csv", index=False)
    health.to_csv(REPO / "figures" / f"{figure_name}_health.csv", index=False)
    (REPO / "figures" / f"{figure_name}.json").write_text(json.dumps(
        {"N": N, "K": K, "window": window, "ema_decay": ema_decay, "dataset": dataset, "caption": caption},
        indent=1))
plt.show()
