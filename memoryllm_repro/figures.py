"""The figures, drawn from the tidy frames the notebooks write (results/<notebook>/*.csv, figures/*.csv): one
function per figure, each returning a matplotlib Figure, so that a figure can be re-drawn from its CSV without
recomputing anything (`python -m memoryllm_repro.figures` re-plots the committed CSVs).

Conventions, the same in every figure: method and dataset names are spelled out (never code names); the paper's
own numbers are drawn in grey and labelled "paper (Llama-2-7B)" wherever the paper gives them (`PAPER` below, the
one place they are written down); accuracies of small samples carry their 95% Wilson intervals; legends sit
outside the data; panels that are compared share their y-scale.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

from .plotting import apply_style, savefig

# ---------------------------------------------------------------------------------------------- the paper's numbers
PAPER_MODEL = "Llama-2-7B"
PAPER = {
    # Table 2 (§4.4.3), LongBench F1: (MemoryLLM-16k, MemoryLLM-all-BM25). The 16k column is also MemoryLLM's
    # rightmost point in Figure 4 (the paper gives no other Figure 4 value in numbers).
    "table2": {"narrativeqa": (20.64, 15.60), "qasper": (19.57, 20.30), "multifieldqa_en": (29.56, 33.08),
               "hotpotqa": (34.03, 32.27), "2wikimqa": (27.22, 24.17), "musique": (13.47, 15.36)},
    "table2_length": 16384,
    # §4.7.2: accuracy after one update (Figure 5's first point) of the main model, N = 30 x 256, K = 256.
    "step1": {"squad": 0.39, "nq": 0.46},
    "N": 7680, "K": 256,
    # §4.7.1: the K = 128 model of the Figure 7 ablation (left out of the figure for being much worse).
    "step1_k128": {"squad": 0.25, "nq": 0.34},
    # §4.7.2: memory in the last half of the layers only (all layers: "step1" above).
    "step1_last_half": {"squad": 0.22, "nq": 0.39},
    # Figure 6 (§4.6): the running accuracy does not decline over this many updates (its level is given only in
    # the image; the step-1 accuracies above are where a freshly written context is answered).
    "integrity_updates": 650_000,
}
GREY = "0.45"

# ---------------------------------------------------------------------------------------------- readable names
DATASETS = {"bundled": "held-out fictional facts", "squad": "SQuAD", "nq": "NaturalQuestions",
            "bundled_single": "bundled long QA, single passage", "bundled_twohop": "bundled long QA, two hops",
            "narrativeqa": "NarrativeQA", "qasper": "Qasper", "multifieldqa_en": "MultiFieldQA-en",
            "hotpotqa": "HotpotQA", "2wikimqa": "2WikiMultihopQA", "musique": "MuSiQue"}
METHODS = {"memoryllm": "MemoryLLM (ours)", "memoryllm_alt": "MemoryLLM, longer writes (ours)",
           "memoryllm_bm25": "MemoryLLM + BM25 (ours)",
           "backbone_window": "backbone, short window", "backbone_full": "backbone, full context"}
SHORT = {"memoryllm": "MemoryLLM", "memoryllm_alt": "MemoryLLM (longer writes)", "memoryllm_bm25": "MemoryLLM + BM25", "backbone_window": "backbone (window)",
         "backbone_full": "backbone (full)"}
PLACES = {"prompt": "in the prompt", "cut": "truncated away"}


def dataset_label(key: str) -> str:
    return DATASETS.get(key, key.replace("_", " "))


def method_label(key: str, window: int | None = None, full_max: int | None = None, short: bool = False,
                 chunk: int | None = None, alt_chunk: int | None = None) -> str:
    if key in ("memoryllm", "memoryllm_alt") and (chunk if key == "memoryllm" else alt_chunk) and not short:
        return f"MemoryLLM, {chunk if key == 'memoryllm' else alt_chunk}-token writes (ours)"
    if short:
        return SHORT.get(key, key.replace("_", " "))
    if key == "backbone_window" and window:
        return f"backbone, last {window:,} tokens"
    if key == "backbone_full" and full_max:
        return f"backbone, up to {full_max:,} tokens"
    if key == "memoryllm_bm25":
        return "MemoryLLM + BM25 (¼ of the length; ours)"
    return METHODS.get(key, key.replace("_", " "))


def eq5(t, a_u: float, a_b: float, N: int, K: int) -> float:
    """Eq. 5 with the borderline added back (the same as `memoryllm_repro.theoretical_accuracy`, which lives above
    this module's layer): a_t = a_b + (a_u - a_b) ((N-K)/N)^(t-1)."""
    return a_b + (a_u - a_b) * ((N - K) / N) ** (t - 1)


def _figure(nrows: int, ncols: int, size: tuple[float, float], **kw):
    import matplotlib.pyplot as plt
    apply_style()
    fig = plt.figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _handles(axes) -> tuple[list, list]:
    h, lab = [], []
    for a in axes:
        hh, ll = a.get_legend_handles_labels()
        h += hh
        lab += ll
    return h, lab


def _legend(fig, handles, labels, ncol: int | None = None):
    """One legend for the whole figure, hung under the panels (never over data; saved with bbox_inches="tight")."""
    seen = {}
    for h, lab in zip(handles, labels):
        if lab and not lab.startswith("_") and lab not in seen:
            seen[lab] = h
    fig.draw_without_rendering()   # lay the panels out first, then hang the legend under their labels
    bottom = min(ax.get_tightbbox().y0 for ax in fig.axes) / fig.bbox.height
    fig.set_layout_engine("none")  # keep that layout: the legend and caption are placed against it
    return fig.legend(seen.values(), seen.keys(), loc="upper center", bbox_to_anchor=(0.5, bottom - 0.01),
                      fontsize=7, frameon=False, ncol=ncol or min(len(seen), 3))


def _caption(fig, caption: str | None):
    """The run's facts under the legend."""
    if caption:
        fig.draw_without_rendering()
        y = min([leg.get_window_extent().y0 for leg in fig.legends] or [0.0]) / fig.bbox.height
        fig.text(0.005, y - 0.01, caption, fontsize=6.5, ha="left", va="top", wrap=True)


PAPER_MARKERS = {"squad": "^", "nq": "v"}   # the paper's datasets by marker shape, its variants by fill


def _paper_step1_marks(ax, values: dict, x: float, filled: bool, label: str):
    """Grey marks of the paper's step-1 accuracies at x (beside our update-1 points): shape = dataset."""
    for ds, v in values.items():
        ax.plot([x], [v], marker=PAPER_MARKERS.get(ds, "o"), ms=6, ls="none", color=GREY,
                mfc=GREY if filled else "white", mec=GREY, zorder=4, label=f"{label}, {dataset_label(ds)}")


# ---------------------------------------------------------------------------------------------- Figure 4
def table2_frame(summary):
    """Table 2 as a tidy frame (task, method, f1, f1_first_line) at the longest length of `summary`."""
    longest = summary.max_length.max()
    t = summary[(summary.max_length == longest) & summary.method.isin(["memoryllm", "memoryllm_bm25"])]
    return t[["task", "max_length", "method", "f1", "f1_first_line"]].reset_index(drop=True)


def figure4(summary, evidence=None, *, window: int | None = None, full_max: int | None = None,
            caption: str | None = None, chunk: int | None = None, alt_chunk: int | None = None):
    """Figure 4 + Table 2 from `summarize_longbench`'s frame (task, max_length, method, f1, f1_first_line, n and,
    when present, f1_ci_low/f1_ci_high ...) and optionally `evidence_breakdown`'s frame (task, place, n, f1,
    f1_first_line). Top row: LongBench's raw F1 per task; bottom row: the same predictions cut at their first
    line; one y-scale per row. Right column: Table 2 (ours at the longest length and the paper's at 16k) and
    where the evidence was for MemoryLLM. Methods that coincide are drawn with distinct markers, a small
    horizontal offset, and a note naming the methods that are at 0 at every length."""
    import numpy as np
    tasks = list(dict.fromkeys(summary.task))
    methods = [m for m in ("memoryllm", "memoryllm_alt", "backbone_window", "backbone_full", "memoryllm_bm25")
               if m in set(summary.method)] + sorted(set(summary.method) - set(METHODS))
    style = {"memoryllm": ("o", "-", "C0"), "memoryllm_alt": ("v", "-", "C4"), "backbone_window": ("s", "--", "C1"),
             "backbone_full": ("^", ":", "C2"), "memoryllm_bm25": ("D", "-.", "C3")}
    lengths = sorted(set(summary.max_length))
    paper_len = PAPER["table2_length"]
    has_paper = any(t in PAPER["table2"] for t in tasks)
    ticks = lengths + ([paper_len] if has_paper and paper_len not in lengths else [])
    fig, axes = _figure(2, len(tasks) + 1, (3.6 * len(tasks) + 4.6, 6.6),
                        gridspec_kw={"width_ratios": [1] * len(tasks) + [1.3]})
    rows = [("f1", "F1, LongBench scorer (raw)"), ("f1_first_line", "F1, answer cut at its first line")]
    for r, (metric, ylabel) in enumerate(rows):
        top = max([summary[metric].max(), *([v[0] for t, v in PAPER["table2"].items() if t in tasks] or [0])])
        if f"{metric}_ci_high" in summary:
            top = max(top, summary[f"{metric}_ci_high"].max())
        ylim = (-0.04 * max(top, 1), 1.12 * max(top, 1))
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            s = summary[summary.task == task]
            zero = []
            for i, m in enumerate(methods):
                d = s[s.method == m].sort_values("max_length")
                if d.empty:
                    continue
                marker, ls, color = style.get(m, ("v", "-", f"C{4 + i}"))
                x = d.max_length.to_numpy() * 2 ** (0.07 * (i - (len(methods) - 1) / 2))   # dodge in log space
                ax.plot(x, d[metric], marker=marker, ls=ls, color=color, ms=4, lw=1.3,
                        label=method_label(m, window, full_max, chunk=chunk, alt_chunk=alt_chunk), zorder=3)
                if f"{metric}_ci_low" in d:
                    ax.vlines(x, d[f"{metric}_ci_low"], d[f"{metric}_ci_high"], color=color, lw=0.8, alpha=0.6)
                if (d[metric] == 0).all():
                    zero.append(method_label(m, short=True))
            if metric == "f1" and task in PAPER["table2"]:
                ax.plot([paper_len], [PAPER["table2"][task][0]], marker="*", ms=10, ls="none", color=GREY,
                        label=f"paper: MemoryLLM-7B at 16k (Table 2; {PAPER_MODEL} backbone)", zorder=4)
            if len(zero) > 1:   # coinciding lines: say so in words as well
                names = textwrap.fill(", ".join(z.replace(" ", "\u00a0") for z in zero), 62).replace("\u00a0", " ")
                ax.text(0.03, 0.05, f"{len(zero)} methods at 0 at every length:\n{names}",
                        transform=ax.transAxes, fontsize=5.5, va="bottom",
                        bbox=dict(fc="white", ec="none", alpha=0.85, pad=1))
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [f"{x // 1024}k" if x >= 1024 else str(x) for x in ticks])
            ax.minorticks_off()
            ax.set_ylim(*ylim)
            ax.set(ylabel=ylabel if c == 0 else None,
                   xlabel="maximum context length (tokens)" if r == 1 else None,
                   title=f"{dataset_label(task)}\n(n = {int(s.n.max())} per point)" if r == 0 else None)
            if c:
                ax.tick_params(labelleft=False)
    # Table 2: ours at the longest length next to the paper's at 16k (raw F1, as the paper reports)
    ax = axes[0][-1]
    t2 = table2_frame(summary)
    names, y = [], 0
    for task in tasks:
        d = t2[t2.task == task].set_index("method")
        for m, marker in (("memoryllm", "o"), ("memoryllm_bm25", "D")):
            if m in d.index:
                ax.plot(d.loc[m, "f1"], y, marker=marker, color=style[m][2], ls="none", ms=5)
        names.append(f"{dataset_label(task)} ({int(t2.max_length.max()):,})")
        y += 1
    for task, (full, bm25) in PAPER["table2"].items():
        ax.plot(full, y, marker="o", color=GREY, ls="none", ms=5, mfc="white",
                label=f"paper (MemoryLLM-7B, {PAPER_MODEL}): full 16k context")
        ax.plot(bm25, y, marker="D", color=GREY, ls="none", ms=5,
                label=f"paper (MemoryLLM-7B, {PAPER_MODEL}): BM25 picks 4k of it")
        names.append(f"paper: {dataset_label(task)}")
        y += 1
    ax.set_yticks(range(len(names)), names, fontsize=6.5)
    ax.invert_yaxis()
    ax.set(xlabel="F1 (raw)", title="Table 2: full context vs BM25")
    ax.set_xlim(-1, 1.1 * max(PAPER["table2"]["hotpotqa"][0], t2.f1.max()))
    ax.yaxis.tick_right()
    # where the evidence passage was, for MemoryLLM (bundled sets)
    ax = axes[1][-1]
    if evidence is not None and len(evidence):
        order = {"prompt": 0, "cut": 9}
        places = sorted(set(evidence.place), key=lambda p: (order.get(p, 1), p))
        height = 0.8 / len(tasks)
        for i, task in enumerate(tasks):
            d = evidence[evidence.task == task].set_index("place")
            ys = np.arange(len(places)) + (i - (len(tasks) - 1) / 2) * height
            vals = [d.f1_first_line.get(p, np.nan) for p in places]
            ax.barh(ys, vals, height, color=f"C{4 + i}",
                    label=f"F1 by evidence place (n = examples): {dataset_label(task)}")
            for y, p, v in zip(ys, places, vals):
                if p in d.index:
                    ax.annotate(f"{v:.1f} (n = {int(d.n[p])})", (0 if np.isnan(v) else v, y), xytext=(3, 0),
                                textcoords="offset points", va="center", fontsize=6, color=f"C{4 + i}")
        ax.set_yticks(range(len(places)), [PLACES.get(p, p) for p in places], fontsize=6.5)
        ax.grid(axis="y", visible=False)
        ax.invert_yaxis()
        ax.yaxis.tick_right()
        ax.set_xlim(0, max(20.0, 1.4 * evidence.f1_first_line.max()))
        ax.set(xlabel="F1, answer cut at its first line", title="MemoryLLM (ours): F1 by where the evidence was")
    else:
        ax.axis("off")
    _legend(fig, *_handles(axes.flat), ncol=3)
    _caption(fig, caption)
    return fig


# ---------------------------------------------------------------------------------------------- Figure 5
def figure5(summary, N: int, K: int, *, caption: str | None = None):
    """Figure 5 from `eval.retention.summarize`'s frame (dataset, condition, step, accuracy, n, ci_low,
    ci_high): accuracy after each update with its Wilson band, Eq. 5's bound through our update-1 accuracy and
    borderline, the borderline and the context-in-prompt references, and the paper's step-1 accuracies (grey)."""
    order = list(DATASETS)   # the paper's order: (a) SQuAD, (b) NaturalQuestions
    datasets = sorted(dict.fromkeys(summary.dataset), key=lambda d: order.index(d) if d in order else len(order))
    fig, axes = _figure(1, len(datasets), (4.3 * len(datasets), 3.6), sharey=True)
    for ax, ds in zip(axes[0], datasets):
        s = summary[summary.dataset == ds]
        mem = s[s.condition == "memory"].sort_values("step")
        t = mem.step.to_numpy()
        ref = {c: s[s.condition == c] for c in ("borderline", "context_in_prompt")}
        a_u, a_b = mem.accuracy.iloc[0], ref["borderline"].accuracy.mean()
        ax.plot(t, mem.accuracy, marker="o", ms=3, color="C0", label="MemoryLLM (ours), 95% Wilson band", zorder=3)
        ax.fill_between(t, mem.ci_low, mem.ci_high, color="C0", alpha=0.2, lw=0)
        ax.plot(t, [eq5(x, a_u, a_b, N, K) for x in t], ls=":", color="k",
                label=r"Eq. 5 bound: $a_b + (a_u-a_b)(1-K/N)^{t-1}$")
        ax.axhline(a_b, ls="--", color="C1", label="borderline: context never written")
        if len(ref["borderline"]):
            ax.axhspan(ref["borderline"].ci_low.mean(), ref["borderline"].ci_high.mean(), color="C1", alpha=0.08)
        if len(ref["context_in_prompt"]):
            ax.axhline(ref["context_in_prompt"].accuracy.mean(), ls="-.", color="C2",
                       label="context in the prompt instead")
        paper = {ds: PAPER["step1"][ds]} if ds in PAPER["step1"] else PAPER["step1"]
        _paper_step1_marks(ax, paper, 0.6, True, f"paper ({PAPER_MODEL}, N = {PAPER['N']:,}, K = {PAPER['K']}): "
                                                 "accuracy after 1 update")
        ax.set(title=f"{dataset_label(ds)} (n = {int(mem.n.iloc[0])} questions)", xlabel="number of updates",
               ylabel="accuracy" if ax is axes[0][0] else None, ylim=(-0.02, 1.05))
        ax.set_xlim(0.2, t.max() + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
    h, lab = axes[0][0].get_legend_handles_labels()
    _legend(fig, h, lab, ncol=1 if len(datasets) == 1 else 2)
    _caption(fig, caption)
    return fig


# ---------------------------------------------------------------------------------------------- Figure 6
def figure6(series, health, N: int, K: int, *, window: int, ema_decay: float, dataset: str = "bundled",
            caption: str | None = None):
    """Figure 6 from `eval.integrity.integrity_series`'s frame (update, accuracy, n, ci_low, ci_high, ema) and
    the stream's health rows (update, norm_mean, norm_layer_min, norm_layer_max, fresh_fraction, nonfinite and
    probe_hit): the running accuracy on the context just written with its Wilson band, and its EMA; pool health
    (norms on the left axis, the share of recently written slots on the labelled right axis); the probe fact
    written before the stream against the share of its memory left."""
    fig, axes = _figure(1, 3, (13.5, 3.9))
    fig.get_layout_engine().set(wspace=0.08)
    ax = axes[0][0]
    ax.plot(series["update"], series.accuracy, color="C0",
            label=f"ours: accuracy over the last {window:,} questions asked (95% Wilson band)")
    ax.fill_between(series["update"], series.ci_low, series.ci_high, color="C0", alpha=0.2, lw=0)
    ax.plot(series["update"], series.ema, color="C1", alpha=0.9,
            label=f"ours: exponential moving average ({ema_decay} per question)")
    paper = {dataset: PAPER["step1"][dataset]} if dataset in PAPER["step1"] else PAPER["step1"]
    for ds, v in paper.items():
        ax.axhline(v, color=GREY, ls=(0, (4, 2)), lw=1,
                   label=f"paper ({PAPER_MODEL}): accuracy after 1 update; flat over "
                         f"{PAPER['integrity_updates']:,} updates in its Fig. 6")
        ax.annotate({"squad": "SQuAD", "nq": "NQ"}.get(ds, ds), (1.0, v), xycoords=("axes fraction", "data"),
                    xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom", fontsize=6, color=GREY)
    ax.set(xlabel="number of updates", ylabel="accuracy on the context just written", ylim=(-0.02, 1.05),
           title=f"integrity: {dataset_label(dataset)} stream")
    # pool health: two quantities, two labelled axes
    ax = axes[0][1]
    ax.plot(health["update"], health.norm_mean, color="C0", label="mean memory-vector norm (left axis)")
    ax.fill_between(health["update"], health.norm_layer_min, health.norm_layer_max, color="C0", alpha=0.15, lw=0,
                    label="range of the per-layer means (left axis)")
    ax.set(xlabel="number of updates", ylabel="memory-vector norm", title="pool health")
    ax.set_ylim(0, 1.1 * float(health.norm_layer_max.max()))
    ax2 = ax.twinx()
    ax2.grid(False)
    ax2.plot(health["update"], health.fresh_fraction, color="C3", ls="--", marker=".",
             label="share of slots written in the last N/K updates (right axis)")
    ax2.axhline(1 - (1 - K / N) ** (N // K), color="C3", ls=":", lw=1,
                label=r"its expected value $1-(1-K/N)^{N/K}$ (right axis)")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("share of fresh slots", color="C3")
    ax2.tick_params(axis="y", colors="C3")
    # the probe fact, on a log x axis: its share of memory decays within ~5 N/K updates, and a long stream would
    # squeeze that into the origin
    import numpy as np
    ax = axes[0][2]
    hu = health["update"].to_numpy()
    t = np.unique(np.geomspace(1, max(int(hu.max()), 2), 300).round())
    ax.plot(t, (1 - K / N) ** t, ls=":", color="k", label=r"share of the probe's memory left, $(1-K/N)^t$")
    if "probe_hit" in health:
        p = health.probe_hit.astype(float).to_numpy()
        ax.plot(hu, p, drawstyle="steps-post", marker="o", ms=3, color="C4",
                label="probe fact answered (1 = yes, 0 = no)")
        if not p.any():
            ax.text(0.97, 0.55, f"never answered at any check\n(first check: update {int(hu[0]):,}, where\n"
                                f"{(1 - K / N) ** hu[0]:.2f} of its memory is expected left)",
                    transform=ax.transAxes, ha="right", fontsize=7, color="C4")
    ax.set_xscale("log")
    ax.set(xlabel="number of updates (log scale)", ylabel="answered / share left", ylim=(-0.05, 1.05),
           title="a fact written before the stream")
    _legend(fig, *_handles((*axes.flat, ax2)), ncol=3)
    _caption(fig, caption)
    return fig


# ---------------------------------------------------------------------------------------------- Figure 7
def _parse_config(name: str):
    import re
    m = re.fullmatch(r"k(\d+)_n(\d+)(?:_(\w+))?", name)
    return (int(m[1]), int(m[2]), m[3]) if m else None


def config_label(name: str, N: int, K: int) -> str:
    variant = {"input": "memory from each layer's input", "lasthalf": "memory in the last half of the layers"}
    p = _parse_config(name)
    base = f"K = {K}, N = {N:,} (N/K = {N // K})"
    return f"{variant.get(p[2], p[2].replace('_', ' '))}, {base}" if p and p[2] else base


def ablation_groups(configs: list[str]) -> dict[str, list[str]]:
    """The comparisons Figure 7 makes, from the config names `k<K>_n<N/K>[_variant]`: K at the reference N/K,
    N/K at the reference K, and structure variants against the reference (k64_n10, else the first)."""
    parsed = {c: _parse_config(c) for c in configs}
    ref = "k64_n10" if "k64_n10" in configs else configs[0]
    rk, rn = (parsed[ref] or (None, None, None))[:2]
    plain = [c for c in configs if parsed[c] and not parsed[c][2]]
    groups = {f"write size K, at N/K = {rn}": [c for c in plain if parsed[c][1] == rn],
              f"pool size N/K, at K = {rk}": [c for c in plain if parsed[c][0] == rk],
              f"where memory lives, at N/K = {rn}": [ref] + [c for c in configs if parsed[c] and parsed[c][2]]}
    groups = {k: list(dict.fromkeys(v)) for k, v in groups.items() if len(set(v) - {ref}) or len(v) > 1}
    rest = [c for c in configs if not any(c in v for v in groups.values())]
    if rest:
        groups["other"] = rest
    return groups or {"all": list(configs)}


def figure7(summary, *, trained: dict | None = None, caption: str | None = None):
    """Figure 7 from the per-config `summarize` frame (config, N, K, condition, step, accuracy, n, ci_low,
    ci_high): one column per comparison (K, N/K, structure), raw accuracy with Wilson bands and Eq. 5 (top) and
    accuracy relative to update 1 (bottom), y shared per row, the paper's step-1 accuracies in grey."""
    configs = list(dict.fromkeys(summary.config))
    groups = ablation_groups(configs)
    color = {c: f"C{i}" for i, c in enumerate(configs)}
    fig, axes = _figure(2, len(groups), (max(4.0 * len(groups), 6.0), 6.0), sharey="row")
    paper = {  # the paper's marks per comparison: (values, marker, filled, label)
        "write": [(PAPER["step1"], 0.7, True, f"paper ({PAPER_MODEL}): K = 256, N/K = 30, after 1 update"),
                  (PAPER["step1_k128"], 0.35, False, f"paper ({PAPER_MODEL}): K = 128, after 1 update")],
        "pool": [(PAPER["step1"], 0.7, True, f"paper ({PAPER_MODEL}): K = 256, N/K = 30, after 1 update")],
        "where": [(PAPER["step1"], 0.7, True, f"paper ({PAPER_MODEL}): K = 256, N/K = 30, after 1 update"),
                  (PAPER["step1_last_half"], 0.35, False,
                   f"paper ({PAPER_MODEL}): memory in the last half of the layers, after 1 update")]}
    for col, (title, members) in enumerate(groups.items()):
        top, bottom = axes[0][col], axes[1][col]
        for name in members:
            s = summary[summary.config == name]
            mem = s[s.condition == "memory"].sort_values("step")
            a_u, a_b = mem.accuracy.iloc[0], s[s.condition == "borderline"].accuracy.mean()
            N, K = int(mem.N.iloc[0]), int(mem.K.iloc[0])
            label = config_label(name, N, K) + ("" if trained is None or trained.get(name, True)
                                                 else " [untrained stand-in]")
            top.plot(mem.step, mem.accuracy, marker="o", ms=3, color=color[name], label=label, zorder=3)
            top.fill_between(mem.step, mem.ci_low, mem.ci_high, color=color[name], alpha=0.12, lw=0)
            top.plot(mem.step, [eq5(t, a_u, a_b, N, K) for t in mem.step], ls=":", lw=0.9, color=color[name])
            if a_u > 0:
                bottom.plot(mem.step, mem.accuracy / a_u, marker="o", ms=3, color=color[name])
            else:   # nothing to divide by: say so rather than leave the panel silently empty
                bottom.text(0.5, 0.9 - 0.08 * members.index(name), f"{config_label(name, N, K)}: 0 after 1 update",
                            transform=bottom.transAxes, ha="center", fontsize=6, color=color[name])
        for values, x, filled, label in paper.get(title.split()[0], []):
            _paper_step1_marks(top, values, x, filled, label)
        top.plot([], [], ls=":", color="k", label="Eq. 5 bound (dotted, one per model)")
        top.set(title=title, ylabel="accuracy (95% Wilson band)" if col == 0 else None, ylim=(-0.02, 1.05))
        bottom.set(xlabel="number of updates", ylabel="accuracy / accuracy after 1 update" if col == 0 else None)
        for a in (top, bottom):
            a.set_xlim(0.1, summary.step.max() + 0.5)
            a.xaxis.get_major_locator().set_params(integer=True)
    _legend(fig, *_handles(axes.flat), ncol=2)
    _caption(fig, caption)
    return fig


# ---------------------------------------------------------------------------------------------- re-plot
def replot_committed(directory: str | Path | None = None) -> list[Path]:
    """Re-draw the figures whose tidy CSVs are committed in figures/ (Figures 4, 5, 6 - each committed stream -
    and 7), from the CSVs alone. The caption facts that are not in a CSV (model, run time)
    are read from figures/<name>.json when present."""
    import json

    import matplotlib.pyplot as plt
    import pandas as pd
    from .results import REPO
    d = Path(directory) if directory is not None else REPO / "figures"
    written = []

    def meta(name):
        p = d / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    if (d / "figure4_longbench.csv").is_file():
        m = meta("figure4_longbench")
        ev = d / "figure4_longbench_evidence.csv"
        fig = figure4(pd.read_csv(d / "figure4_longbench.csv"), pd.read_csv(ev) if ev.is_file() else None,
                      window=m.get("window"), full_max=m.get("full_max"), caption=m.get("caption"),
                      chunk=m.get("chunk"), alt_chunk=m.get("alt_chunk"))
        written += savefig(fig, "figure4_longbench", d)
        plt.close(fig)
    if (d / "figure5_retention.csv").is_file():
        m = meta("figure5_retention")
        fig = figure5(pd.read_csv(d / "figure5_retention.csv"), m["N"], m["K"], caption=m.get("caption"))
        written += savefig(fig, "figure5_retention", d)
        plt.close(fig)
    # every committed stream (figure6_integrity, and e.g. figure6_integrity_generalist: another checkpoint's)
    for health in sorted(d.glob("figure6_integrity*_health.csv")):
        name = health.name[:-len("_health.csv")]
        m = meta(name)
        fig = figure6(pd.read_csv(d / f"{name}.csv"), pd.read_csv(health), m["N"], m["K"], window=m["window"],
                      ema_decay=m["ema_decay"], dataset=m.get("dataset", "bundled"), caption=m.get("caption"))
        written += savefig(fig, name, d)
        plt.close(fig)
    if (d / "figure7_ablation.csv").is_file():
        m = meta("figure7_ablation")
        fig = figure7(pd.read_csv(d / "figure7_ablation.csv"), trained=m.get("trained"), caption=m.get("caption"))
        written += savefig(fig, "figure7_ablation", d)
        plt.close(fig)
    return written


if __name__ == "__main__":
    for p in replot_committed():
        print(p)
