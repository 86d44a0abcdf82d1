# %% [markdown]
# # Figure 7: the K / N ablation (and where memory comes from)
#
# Paper §4.7.1 (our summary): models trained with the same recipe but different pool sizes N and write sizes K
# retain knowledge differently: with K fixed, a larger N forgets less; with N fixed, a smaller K forgets less
# (20 x 256 beats 10 x 512); what matters is N/K. The paper plots raw accuracy and accuracy relative to update 1.
#
# Our ablation at the small model's scale (configs in `memoryllm_repro/resources/train_configs/ablation/`, trained with
# `make ablations`, the same recipe and budget each): K in {32, 64} at N/K = 10 (the paper's 10 x 256 vs
# 10 x 512), N/K in {10, 20, 30} at K = 64, and one
# ablation the paper did not run: memory taken from each layer's *input* instead of its *output*
# (`memory_source: input`; for a context no longer than K, the input rows are exactly its key/value cache).
# The §4.7.2 structure ablation (memory in the last half of the layers, `k64_n10_lasthalf`) has a config but was
# not trained for the committed figure (CPU budget); add it to `configs` once `make ablations` has trained it.
# Configurations without a trained checkpoint fall back to a few-step tiny run: the plot says so, and nothing is
# written to `figures/` unless every configuration is a trained checkpoint. The drawing is
# `memoryllm_repro.figures.figure7`; a second run with the same parameters only re-draws.

# %% tags=["parameters"]
configs = ["k32_n10", "k64_n10", "k64_n20", "k64_n30", "k64_n10_input"]   # + "k64_n10_lasthalf" once trained
num_examples = 16
num_updates = 12
batch_size = 16               # examples evaluated at once (independent pool copies)
fallback_steps = 3            # tiny training run for a configuration that has no checkpoint
use_checkpoints = True        # False: always the tiny stand-ins (CI)
results = None
figure_name = "figure7_ablation"   # None: do not write figures/ (never written unless every model is trained)
recompute = False             # False: re-draw from results/figure7_ablation when it holds a run with these parameters

# %%
import json

import matplotlib.pyplot as plt
import pandas as pd

from memoryllm_repro import load_tokenizer
from memoryllm_repro.eval.retention import run_figure5, summarize
from memoryllm_repro.figures import figure7
from memoryllm_repro.plotting import savefig
from memoryllm_repro.results import REPO, notebook_params, results_dir, reuse_run, write_run
from memoryllm_repro.train.ablation import ablation_model

params = notebook_params(globals(), "figure7_ablation")
out = results_dir("figure7_ablation", results)
earlier = None if recompute else reuse_run(out, params)
if earlier is not None and "trained" not in earlier[1]:
    earlier = None                    # recorded before runs said which models were trained: run again
if earlier is None:
    tok = load_tokenizer("smollm2-135m")
    frames, notes, trained = [], {}, {}
    for name in configs:
        got = ablation_model(name, use_checkpoints, fallback_steps, stand_in_dir=out / "fallback")
        notes[name], trained[name] = got.note, got.trained
        df = run_figure5(got.model, tok, ["bundled"], num_examples, num_updates, seed=3, batch_size=batch_size)
        df["config"], df["N"], df["K"] = name, got.model.N, got.model.K
        frames.append(df)
    records = pd.concat(frames)
    write_run(out, records.to_dict("records"), params, extra={"checkpoints": notes, "trained": trained})
else:   # the same run, already on disk: only re-draw
    records, recorded = earlier
    notes, trained = recorded["checkpoints"], recorded["trained"]
    print(f"re-drawing the run in {out} (recompute=True to run it again)")
summary = pd.concat([summarize(g).assign(config=c, N=g.N.iloc[0], K=g.K.iloc[0])
                     for c, g in records.groupby("config", sort=False)])
summary.to_csv(out / "summary.csv", index=False)
print(json.dumps(notes, indent=1))

# %%
caption = ("SmolLM2-135M MemoryLLMs trained with the same recipe (memoryllm_repro/resources/train_configs/ablation), "
           f"checkpoints: {', '.join(sorted(set(notes.values())))}; {num_examples} held-out questions per model "
           "(held-out fictional facts), pool restored per question; bands: 95% Wilson intervals")
fig = figure7(summary, trained=trained, caption=caption)
if figure_name and all(trained.values()):   # figures/ only ever holds trained ablation checkpoints
    print(savefig(fig, figure_name))
    summary.to_csv(REPO / "figures" / f"{figure_name}.csv", index=False)   # the committed numbers behind it
    (REPO / "figures" / f"{figure_name}.json").write_text(json.dumps({"trained": trained, "caption": caption},
                                                                     indent=1))
elif figure_name:
    print("figures/ not written: stand-ins for", [n for n, ok in trained.items() if not ok])
plt.show()
