# %% [markdown]
# # Figure 5: knowledge retention against the number of updates
#
# Paper §4.5 (our summary): the context that answers a question is written into memory at update 1; every later
# update writes one unrelated context; after each update the model answers the question greedily with 10 new
# tokens, and a hit is the answer appearing in them. Two reference lines: the *borderline* (the question asked
# without its context ever written) and the exponential upper bound of Eq. 5,
# $a_t = a_b + (a_u - a_b)\,((N-K)/N)^{t-1}$, with $a_u$ the accuracy at update 1 and $a_b$ the borderline.
#
# * `make figure5` runs the small CPU configuration below on the default model (about 10 minutes on 2 cores).
# * `make figure5 FULL=1` uses `configs/notebooks/figure5_retention.full.yaml` (SQuAD + NaturalQuestions in the
#   authors' formats, paper-scale sample counts, CUDA).
# * All computation lives in `memoryllm_repro.eval.retention`; this notebook runs it and draws the figure.

# %% tags=["parameters"]
model = "default"            # "default", "untrained", "tiny", or a checkpoint folder (see memoryllm_repro.checkpoints)
datasets = ["bundled"]       # "bundled" (held-out fictional facts), "squad", "nq"
num_examples = 36            # questions per dataset
num_updates = 15             # unrelated contexts written after the relevant one
num_distractors = 30         # size of the shared list of unrelated contexts
seed = 0
carry_over = False           # True: the pool is not restored between examples (the authors default)
batch_size = 4               # examples at once, each in its own pool copy (1 with carry_over); 4: peak RSS < 3 GB
device = "cpu"
dtype = "float32"
data_dir = None              # folder with squad/ and nq/ in the authors' layout (default: the repo's data/)
results = None               # output folder (default: results/figure5_retention)
figure_name = "figure5_retention"   # None: do not write figures/

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from memoryllm_repro import theoretical_accuracy
from memoryllm_repro.checkpoints import load_model
from memoryllm_repro.eval.retention import run_figure5, summarize
from memoryllm_repro.plotting import apply_style, savefig
from memoryllm_repro.results import results_dir, write_run

t0 = time.time()
net, tok, description = load_model(model, device=device, dtype=dtype)
N, K = net.N, net.K
print(description, f"| N = {N}, K = {K}")

# %%
records = run_figure5(net, tok, datasets=datasets, num_examples=num_examples, num_updates=num_updates,
                      num_distractors=num_distractors, seed=seed, carry_over=carry_over, data_dir=data_dir,
                      batch_size=1 if carry_over else batch_size)
wall = time.time() - t0
out = results_dir("figure5_retention", results)
params = dict(model=model, datasets=datasets, num_examples=num_examples, num_updates=num_updates,
              num_distractors=num_distractors, seed=seed, carry_over=carry_over, device=device, dtype=dtype,
              batch_size=batch_size)
write_run(out, records.to_dict("records"), params,
          extra={"model_description": description, "N": N, "K": K, "wall_seconds": round(wall, 1)})
summary = summarize(records)
summary.to_csv(out / "summary.csv", index=False)
print(f"{len(records)} records in {wall / 60:.1f} min -> {out}")

# %% [markdown]
# Accuracy per update (memory), and the reference conditions: borderline, the context in the prompt instead of
# in memory, and the plain backbone with the context in the prompt.

# %%
summary.round(3)

# %%
apply_style()
fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.2), squeeze=False)
for ax, ds in zip(axes[0], datasets):
    s = summary[summary.dataset == ds]
    mem = s[s.condition == "memory"].sort_values("step")
    ref = {c: s[s.condition == c].accuracy.mean() for c in ("borderline", "context_in_prompt")}
    a_u, a_b = mem.accuracy.iloc[0], ref["borderline"]
    t = mem.step.to_numpy()
    ax.plot(t, mem.accuracy, marker="o", ms=3, label="MemoryLLM")
    ax.fill_between(t, mem.ci_low, mem.ci_high, alpha=0.2)
    ax.plot(t, [theoretical_accuracy(x, a_u, a_b, N, K) for x in t], ls=":", color="k",
            label=r"$a_b + (a_u-a_b)(1-K/N)^{t-1}$")
    ax.axhline(a_b, ls="--", color="grey", label="borderline (no context)")
    ax.axhline(ref["context_in_prompt"], ls="-.", color="tab:green", alpha=0.7, label="context in prompt")
    ax.set(title=ds, xlabel="number of updates", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.xaxis.get_major_locator().set_params(integer=True)
axes[0][-1].legend(fontsize=7, loc="upper right")
n = int(mem.n.iloc[0])
fig.text(0.0, -0.16, f"{description}; N = {N}, K = {K}; {n} examples per dataset; bands: 95% Wilson intervals; "
         f"pool {'carried over' if carry_over else 'restored'} between examples; run time {wall / 60:.1f} min",
         fontsize=7, wrap=True)
if figure_name:
    print(savefig(fig, figure_name))
plt.show()
