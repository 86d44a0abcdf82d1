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
# continues from the last checkpoint in the results folder. `make figure6 FULL=1` is the 1,000,000-update run.

# %% tags=["parameters"]
model = "default"
dataset = "bundled"
num_examples = 200           # contexts in the stream (one pass = this many updates)
updates = 300                # the CPU default (wall time in the README)
window = 100                 # running-accuracy window (paper: 2,250 SQuAD / 1,004 NQ)
ema_decay = 0.99             # paper: 0.9999 over 650k updates
checkpoint_every = 100
health_every = 25
seed = 0
device = "cpu"
dtype = "float32"
results = None               # default: results/figure6_integrity
fresh = False                # True: delete earlier results and start over
figure_name = "figure6_integrity"

# %%
import shutil
import time

import matplotlib.pyplot as plt
import numpy as np

from memoryllm_repro import expected_retention
from memoryllm_repro.checkpoints import load_model
from memoryllm_repro.eval.integrity import count_records, ema, load_records, run_integrity, windowed_accuracy
from memoryllm_repro.eval.retention import retention_data
from memoryllm_repro.plotting import apply_style, savefig
from memoryllm_repro.results import notebook_params, results_dir, write_run

out = results_dir("figure6_integrity", results)
if fresh:
    shutil.rmtree(out)
    out = results_dir("figure6_integrity", results)
net, tok, description = load_model(model, device=device, dtype=dtype)
examples, _ = retention_data(dataset, tok, num_examples + 1, 1, seed=2)
probe, stream = examples[0], examples[1:]
done_before = count_records(out / "run")
t0 = time.time()
run_integrity(net, tok, stream, out / "run", updates, checkpoint_every, health_every, probe=probe, seed=seed)
wall = time.time() - t0
records, health = load_records(out / "run")
write_run(out, records.to_dict("records"), notebook_params(globals(), "figure6_integrity"),
          extra={"model_description": description, "N": net.N, "K": net.K, "wall_seconds_this_call": wall,
                 "updates_this_call": len(records) - done_before})
rate = (len(records) - done_before) / wall
print(f"{len(records)} updates; this call {wall / 60:.1f} min, {rate:.2f} updates/s "
      f"-> 1,000,000 updates would take {1e6 / max(rate, 1e-9) / 86400:.1f} days at this rate")

# %%
apply_style()
hits = records["hit"].astype(float).to_numpy()
u = records["update"].to_numpy()
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
ax = axes[0]
ax.plot(u, windowed_accuracy(hits, window), label=f"accuracy, last {window}")
ax.plot(u, ema(hits, ema_decay), label=f"EMA ({ema_decay})", alpha=0.8)
ax.set(xlabel="number of updates", ylabel="accuracy on the latest context", ylim=(-0.02, 1.02),
       title="integrity (Fig. 6)")
ax.legend(fontsize=7)
ax = axes[1]
ax.plot(health["update"], health.norm_mean, label="mean vector norm")
ax.fill_between(health["update"], health.norm_layer_min, health.norm_layer_max, alpha=0.2, label="layer range")
ax.set(xlabel="number of updates", ylabel="norm", title="pool health")
ax2 = ax.twinx()
ax2.plot(health["update"], health.fresh_fraction, color="tab:red", ls="--", label="written in last N/K updates")
ax2.axhline(1 - expected_retention(net.N // net.K, net.N, net.K), color="tab:red", ls=":", lw=0.8)
ax2.set_ylim(0, 1)
ax.legend(fontsize=7, loc="lower left")
ax2.legend(fontsize=7, loc="lower right")
ax = axes[2]
if "probe_hit" in health:
    ax.plot(health["update"], health.probe_hit.astype(float), drawstyle="steps-post", label="probe fact answered")
ax.plot(health["update"], [expected_retention(t, net.N, net.K) for t in health["update"]], ls=":", color="k",
        label=r"$(1-K/N)^t$")
ax.set(xlabel="number of updates", ylim=(-0.05, 1.05), title="an early fact fades")
ax.legend(fontsize=7)
fig.text(0.0, -0.08, f"{description}; N = {net.N}, K = {net.K}; {dataset} stream of {len(stream)} contexts; "
         f"non-finite values seen: {int(health.nonfinite.sum())}", fontsize=7)
if figure_name:
    print(savefig(fig, figure_name))
plt.show()
