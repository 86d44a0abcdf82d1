"""The performance table: every cost measured against a baseline run in the same process (interleaved, median of
--repeats); ratios are the result, absolute seconds only context. Each section runs in its own child process, so
the table also gives the peak RSS of each (ru_maxrss of that child). Writes results/bench/table.md and table.json.

    python bench/run.py [--quick] [--sections write,read,sweep,scaling,dtype,batch,eval,stream,rss]     (make bench)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from memoryllm_repro import MemoryLLM
from memoryllm_repro.cache import CACHE_KW
from memoryllm_repro.results import REPO, environment

ROWS: list[dict] = []


def interleaved(fa, fb, repeats: int) -> tuple[float, float]:
    """Medians of fa and fb timed alternately (a busy machine slows both alike)."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, ts in ((fa, ta), (fb, tb)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def timed(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def row(section, measured, t, baseline, tb, target=None):
    r = {"section": section, "measured": measured, "s": round(t, 4), "baseline": baseline, "baseline_s": round(tb, 4),
         "ratio": round(t / tb, 3), "target": target}
    ROWS.append(r)
    print(f"[{section}] {measured}: {t:.3f}s vs {baseline}: {tb:.3f}s -> {t / tb:.2f}" + (f" (target {target})"
                                                                                          if target else ""))


def model_with(num_blocks, num_tokens, base=None, fast_fill=False, dtype=torch.float32):
    m = MemoryLLM.from_base(base or "smollm2-135m", num_blocks=num_blocks, num_tokens=num_tokens, dtype=dtype)
    V = m.base.config.vocab_size
    with torch.no_grad():
        if fast_fill:   # real written vectors, committed num_blocks + 5 times: a full, non-tiled pool, quickly
            deltas = [m.inject_memory(torch.randint(100, V, (1, 128))) for _ in range(2)]
            for i in range(num_blocks + 5):
                m.write_memory(deltas[i % 2])
        else:
            for _ in range(num_blocks + 5):       # a full, non-tiled pool
                m.inject_memory(torch.randint(100, V, (1, 128)))
    return m, V


GEN = dict(max_new_tokens=10, min_new_tokens=10, eos_token_id=None)


@torch.no_grad()
def bench_write_read(m, V, reps):
    ctx, q = torch.randint(100, V, (1, 128)), torch.randint(100, V, (1, 16))

    def write():
        with m.memory_snapshot():
            m.inject_memory(ctx)
    tw, tf = interleaved(lambda: m.inject_memory(ctx), lambda: m.base.model(torch.randint(100, V, (1, m.K + 128))),
                         reps)
    row("write", "inject_memory + commit, 128 tokens", tw, "plain forward, K+n tokens", tf, 1.1)
    t_read, t_plain = interleaved(lambda: m.generate(q, **GEN), lambda: m.generate(q, use_memory=False, **GEN), reps)
    row("read", "16-token question + 10 greedy tokens, full memory", t_read, "backbone, no memory", t_plain, 1.15)
    row("read", "16-token question + 10 greedy tokens, full memory", t_read,
        "backbone, 128-token context in the prompt", timed(lambda: m.generate(torch.cat([ctx, q], 1),
                                                                               use_memory=False, **GEN), reps))

    def write_read():
        with m.memory_snapshot():
            m.inject_memory(ctx)
            m.generate(q, **GEN)
    row("read", "write + answer (memory keys/values refreshed)", timed(write_read, reps), "write + backbone answer",
        timed(write, reps) + timed(lambda: m.generate(q, use_memory=False, **GEN), reps))


@torch.no_grad()
def bench_sweep(reps, quick, blocks):
    """Write and read against their baselines at N = blocks * 64, one pool size per child process."""
    m, V = model_with(blocks, 64, fast_fill=True)
    ctx, q = torch.randint(100, V, (1, 128)), torch.randint(100, V, (1, 16))
    tw, tf = interleaved(lambda: m.inject_memory(ctx), lambda: m.base.model(torch.randint(100, V, (1, m.K + 128))),
                         reps)
    row("sweep", f"write at N={m.N} (128 tokens, commit in place)", tw, "plain forward, K+n tokens", tf, 1.1)
    if m.N in (1920, 7680):
        tr, tp = interleaved(lambda: m.generate(q, **GEN), lambda: m.generate(q, use_memory=False, **GEN), reps)
        row("sweep", f"answer at N={m.N} (16 + 10 greedy tokens)", tr, "backbone's own answer", tp,
            1.15 if m.N == 1920 else 1.3)
        tr, tf = interleaved(lambda: m.generate(q, **GEN), attention_floor(m, V, q), reps)
        row("sweep", f"answer at N={m.N} (16 + 10 greedy tokens)", tr,
            f"backbone (HF generation) after {m.N} prompt tokens already in its KV cache", tf)
        attend = memory_attention(m, q.shape[1], GEN["max_new_tokens"])
        plain = lambda: m.generate(q, use_memory=False, **GEN)

        def floor():
            plain()
            attend()
        tf, tp = interleaved(floor, plain, reps)
        row("sweep", f"floor at N={m.N}: backbone answer + attention over the memory alone", tf,
            "backbone's own answer", tp)
        tr, tf = interleaved(lambda: m.generate(q, **GEN), floor, reps)
        row("sweep", f"answer at N={m.N} (16 + 10 greedy tokens)", tr,
            "floor: backbone answer + attention over the memory alone", tf)


def memory_attention(m, q_len: int, new_tokens: int):
    """The work a read adds to the backbone's answer and nothing else: in every layer, the question's q_len queries
    (prefill) and then one query per new token attend over the N + 1 memory keys/values (BOS + pool), in the
    model's dtype, grouped heads handed to SDPA as they are (as our layer loops do). Memory-bound on a CPU: each
    decoding step streams the whole prefix once. Timed beside the backbone's answer (two separate calls, so not a
    strict bound), it shows what a read must cost: a MemoryLLM answer / this floor near 1 leaves nothing else."""
    import torch.nn.functional as F
    cfg = m.base.config
    H, kvh = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    g = torch.Generator().manual_seed(0)
    kv = [(torch.randn(1, kvh, m.N + 1, hd, generator=g).to(m.dtype),
           torch.randn(1, kvh, m.N + 1, hd, generator=g).to(m.dtype)) for _ in range(m.L)]
    prefill = torch.randn(1, H, q_len, hd, generator=g).to(m.dtype)
    step = torch.randn(1, kvh, H // kvh, hd, generator=g).to(m.dtype)

    def attend():
        for k, v in kv:
            F.scaled_dot_product_attention(prefill, k, v, enable_gqa=True)
        for _ in range(new_tokens - 1):
            for k, v in kv:
                F.scaled_dot_product_attention(step, k, v)
    return attend


def attention_floor(m, V, q):
    """The plain backbone answering the same question under HF generation after an N-token prompt whose keys and
    values it already cached: as many extra keys per layer as a MemoryLLM read, no memory machinery. Not a strict
    floor (HF's dynamic cache concatenates, i.e. copies, its keys/values at every new token, and HF's layers repeat
    grouped key/value heads); the cache is cropped back to the prefix after every answer."""
    prefix = torch.randint(100, V, (1, m.N))
    out = m.base(prefix, use_cache=True)
    cache = out.past_key_values if getattr(out, "past_key_values", None) is not None else out.cache
    full = torch.cat([prefix, q], 1)

    def answer():
        m.base.generate(full, do_sample=False, **{CACHE_KW: cache}, **GEN)
        cache.crop(m.N - cache.get_seq_length())     # a negative count: drop the answer's tokens
    return answer


@torch.no_grad()
def bench_dtype(reps):
    """Figure 6's default dtype: a write of a stream-sized context (64 tokens) and an answer in bf16 against the
    same in fp32, same shapes and inputs (CPUs with avx512_bf16 / AMX run bf16 matmuls natively)."""
    m32, V = model_with(30, 64, fast_fill=True)
    m16, _ = model_with(30, 64, fast_fill=True, dtype=torch.bfloat16)
    ctx, q = torch.randint(100, V, (1, 64)), torch.randint(100, V, (1, 16))
    t16, t32 = interleaved(lambda: m16.inject_memory(ctx), lambda: m32.inject_memory(ctx), reps)
    row("dtype", "write of 64 tokens, bf16", t16, "the same in fp32", t32)
    t16, t32 = interleaved(lambda: m16.generate(q, **GEN), lambda: m32.generate(q, **GEN), reps)
    row("dtype", "16-token question + 10 greedy tokens, bf16", t16, "the same in fp32", t32)


@torch.no_grad()
def bench_scaling(reps, quick):
    ratios = [10, 30] if quick else [10, 20, 30, 60]
    base = None
    ref = {}
    for r in ratios:
        m, V = model_with(r, 64, base)
        base = m.base
        ctx, q = torch.randint(100, V, (1, 128)), torch.randint(100, V, (1, 16))

        def write():
            with m.memory_snapshot():
                m.inject_memory(ctx)
        tw, tr = timed(write, reps), timed(lambda: m(q), reps)
        if not ref:
            ref = {"w": tw, "r": tr, "N": m.N}
        row("scaling", f"write at N={m.N}", tw, f"write at N={ref['N']}", ref["w"])
        row("scaling", f"read (16-token forward) at N={m.N}", tr, f"read at N={ref['N']}", ref["r"])
    m, V = model_with(30, 64, base)
    first = None
    for n in ([64, 256] if quick else [64, 128, 256, 512, 1024]):
        ctx = torch.randint(100, V, (1, n))

        def write():
            with m.memory_snapshot():
                m.inject_memory(ctx)
        t = timed(write, reps)
        first = first or (n, t)
        row("scaling", f"write of {n} tokens", t, f"write of {first[0]} tokens", first[1])


@torch.no_grad()
def bench_batch(m, V, reps, quick):
    """Retention-style work (write a 96-token context, answer a 16-token question) for B independent memories."""
    per = {}
    for B in ([1, 4] if quick else [1, 4, 16]):
        ctx, q = torch.randint(100, V, (B, 96)), torch.randint(100, V, (B, 16))

        def step():
            with m.memory_snapshot():
                m.inject_memory(ctx)
                m.generate(q, **GEN)
        with m.memory_snapshot():     # B copies of the pool for this size, the single pool back afterwards
            m.expand_memories(B)
            per[B] = timed(step, max(1, reps // 2)) / B
        row("batch", f"retention step, B={B} memories (per example)", per[B], "B=1 (per example)", per[1])


def bench_eval(m, quick):
    """Retention-evaluation throughput (examples/s) of run_retention with B examples in B memories at once."""
    from memoryllm_repro import load_tokenizer
    from memoryllm_repro.data.retention_set import heldout_retention_set
    from memoryllm_repro.eval.retention import run_retention
    tok = load_tokenizer("smollm2-135m")
    examples, distractors = heldout_retention_set(8 if quick else 16, 4, seed=0)
    per = {}
    for B in ([1, 4] if quick else [1, 4, 16]):
        t = time.perf_counter()
        run_retention(m, tok, examples, distractors, 3, progress=False, batch_size=B)
        per[B] = (time.perf_counter() - t) / len(examples)
        row("eval", f"retention eval (4 writes, 5 answers), batch_size={B}, per example", per[B],
            "batch_size=1", per[1])
        ROWS[-1]["examples_per_s"] = round(1 / per[B], 3)


@torch.no_grad()
def bench_stream(m, V, n):
    """The figure-6 loop: write a context, answer its question, n times."""
    ctxs = [torch.randint(100, V, (1, 96)) for _ in range(n)]
    q = torch.randint(100, V, (1, 16))
    with m.memory_snapshot():
        t = time.perf_counter()
        for c in ctxs:
            m.inject_memory(c)
            m.generate(q, **GEN)
        dt = (time.perf_counter() - t) / n
    tb = timed(lambda: (m.inject_memory(ctxs[0], update_memory=False), m.generate(q, use_memory=False, **GEN)), 3)
    row("stream", "figure-6 update (write + 10-token answer)", dt, "forward of the context + backbone answer", tb)
    print(f"[stream] {1 / dt:.2f} updates/s -> 1,000,000 updates in {1e6 * dt / 86400:.1f} days on this machine")
    ROWS[-1]["updates_per_s"] = round(1 / dt, 3)


def bench_rss():
    """Peak RSS of a figure-5 run: the notebook with its default batch size (the peak of the default run: writes
    are in place, so it does not grow with updates) but 8 examples x 2 updates, in a child process (papermill
    kernel included)."""
    cmd = ["make", "-s", "figure5", "PARAMS=-p num_examples 8 -p num_updates 2 -y 'figure_name: null' "
                                    "-p results results/bench/figure5_rss"]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"[rss] figure5 notebook (8 examples x 2 updates, default batch): peak RSS {peak:.0f} MiB, "
          f"{time.perf_counter() - t:.0f}s")
    ROWS.append({"section": "rss", "measured": "peak RSS of the figure5 notebook", "MiB": round(peak)})


SWEEP = (10, 30, 60, 120)          # N = 640, 1920, 3840, 7680 (K = 64)


def run_section(section: str, a) -> None:
    """One section in this process (a child of main)."""
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    reps = 3 if a.quick else a.repeats
    if section.startswith("sweep"):
        return bench_sweep(reps, a.quick, int(section[5:]))
    if section == "scaling":
        return bench_scaling(reps, a.quick)
    if section == "rss":
        return bench_rss()
    if section == "dtype":
        return bench_dtype(reps)
    m, V = model_with(30, 64)
    if section == "write":      # writes and reads at the default size
        bench_write_read(m, V, reps)
    elif section == "batch":
        bench_batch(m, V, reps, a.quick)
    elif section == "eval":
        bench_eval(m, a.quick)
    elif section == "stream":
        bench_stream(m, V, 10 if a.quick else 30)


def in_child(section: str, a) -> list[dict]:
    """Run a section in a child process; its rows come back with the child's own peak RSS (wait4's rusage)."""
    out = REPO / "results" / "bench" / f".rows-{section}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", section, "--rows", str(out), "--repeats", str(a.repeats),
           "--threads", str(a.threads)] + (["--quick"] if a.quick else [])
    proc = subprocess.Popen(cmd, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"section {section} failed ({proc.returncode})")
    rows = json.loads(out.read_text())
    out.unlink()
    for r in rows:
        r.setdefault("peak_rss_mib", round(usage.ru_maxrss / 1024))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sections", default="write,sweep,scaling,dtype,batch,eval,stream,rss")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per section (1: ratios on a busy host)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--rows", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        run_section(a.child, a)
        Path(a.rows).write_text(json.dumps(ROWS))
        return
    sections = [s for s in a.sections.split(",") if s != "read"]          # "read" runs with "write"
    if "read" in a.sections.split(",") and "write" not in sections:
        sections.insert(0, "write")
    expanded = []
    for s in sections:
        expanded += [f"sweep{b}" for b in (SWEEP[::3] if a.quick else SWEEP)] if s == "sweep" else [s]
    for s in expanded:
        ROWS.extend(in_child(s, a))
    out = REPO / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps({"rows": ROWS, "environment": environment()}, indent=1))
    lines = ["| section | measured | s | baseline | s | ratio | target | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['section']} | {r['measured']} | {r.get('s', '')} | {r.get('baseline', '')} | "
              f"{r.get('baseline_s', '')} | {r.get('ratio', r.get('MiB', ''))} | {r.get('target') or ''} | "
              f"{r.get('peak_rss_mib', '')} |" for r in ROWS]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
