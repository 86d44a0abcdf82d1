# %% [markdown]
# # Figure 5: knowledge retention against the number of updates
#
# Paper §4.5 (our summary): the context that answers a question is written into memory at update 1; every later
# update writes one unrelated context; after each update the model answers the question greedily with 10 new
# tokens, and a hit is the answer appearing in them. Two reference lines: the *borderline* (the question asked
# without its context ever written) and the exponential upper bound of Eq. 5,
# $a_t = a_b + (a_u - a_b)\,((N-K)/N)^{t-1}$, with $a_u$ the accuracy at update 1 and $a_b$ the borderline.
#
# * `make figure5` runs the small CPU configuration below on the default model (about 7 minutes on 2 cores).
# * `make figure5 FULL=1` uses `configs/notebooks/figure5_retention.full.yaml` (SQuAD + NaturalQuestions in the
#   authors' formats, paper-scale sample counts, CUDA).
# * All computation lives in `memoryllm_repro.eval.retention`, the drawing in `memoryllm_repro.figures.figure5`.
#   A second run with the same parameters re-draws from `results/figure5_retention/` (`recompute=True` runs again).

# %% tags=["parameters"]
model = "default"            # "default", "untrained", "tiny", or a checkpoint folder (see memoryllm_repro.checkpoints)
datasets = ["bundled"]       # "bundled" (held-out fictional facts), "squad", "nq"
num_examples = 36            # questions per dataset
num_updates = 19             # unrelated contexts written after the relevant one (updates 1-20: the paper's span)
num_distractors = 30         # size of the shared list of unrelated contexts
seed = 0
carry_over = False           # True: the pool is not restored between examples (the authors default)
batch_size = 4               # examples at once, each in its own pool copy (1 with carry_over); 4: peak RSS < 3 GB
device = "cpu"
dtype = "float32"
data_dir = None              # folder with squad/ and nq/ in the authors' layout (default: the repo's data/)
results = None               # output folder (default: results/figure5_retention)
figure_name = "figure5_retention"   # None: do not write figures/ (never written from a stand-in model)
recompute = False            # False: re-draw from results/figure5_retention when it holds a run with these parameters

# %%
import json
import time

import matplotlib.pyplot as plt

from memoryllm_repro.checkpoints import is_stand_in, load_model
from memoryllm_repro.eval.retention import run_figure5, summarize
from memoryllm_repro.figures import figure5
from memoryllm_repro.plotting import savefig
from memoryllm_repro.results import REPO, notebook_params, results_dir, reuse_run, write_run

params = notebook_params(globals(), "figure5_retention")
out = results_dir("figure5_retention", results)
earlier = None if recompute else reuse_run(out, params)
if earlier is None:
    t0 = time.time()
    net, tok, description = load_model(model, device=device, dtype=dtype)
    N, K = net.N, net.K
    print(description, f"| N = {N}, K = {K}")
    records = run_figure5(net, tok, datasets=datasets, num_examples=num_examples, num_updates=num_updates,
                          num_distractors=num_distractors, seed=seed, carry_over=carry_over, data_dir=data_dir,
                          batch_size=1 if carry_over else batch_size)
    wall = time.time() - t0
    write_run(out, records.to_dict("records"), params,
              extra={"model_description": description, "N": N, "K": K, "wall_seconds": round(wall, 1)})
    print(f"{len(records)} records in {wall / 60:.1f} min -> {out}")
else:   # the same run, already on disk: only re-draw
    records, recorded = earlier
    description, N, K, wall = (recorded[k] for k in ("model_description", "N", "K", "wall_seconds"))
    print(f"re-drawing the run in {out} (recompute=True to run it again)")
summary = summarize(records)
summary.to_csv(out / "summary.csv", index=False)

# %% [markdown]
# Accuracy per update (memory), and the reference conditions: borderline, the context in the prompt instead of
# in memory, and the plain backbone with the context in the prompt.

# %%
summary.round(3)

# %%
n = int(summary[summary.condition == "memory"].n.iloc[0])
caption = (f"{description}; N = {N}, K = {K}; {n} questions per dataset; bands: 95% Wilson intervals; pool "
           f"{'carried over' if carry_over else 'restored'} between questions; run time {wall / 60:.1f} min")
fig = figure5(summary, N, K, caption=caption)
if figure_name and not is_stand_in(description):   # the figure and the numbers behind it
    print(savefig(fig, figure_name))
    summary.to_csv(REPO / "figures" / f"{figure_name}.csv", index=False)
    (REPO / "figures" / f"{figure_name}.json").write_text(json.dumps({"N": N, "K": K, "caption": caption},
                                                                     indent=1))
plt.show()
