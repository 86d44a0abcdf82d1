"""Core latencies of the default model (SmolLM2-135M, fp32, N = 30 x 64, K = 64) against the plain backbone,
measured in one process. Prints medians and ratios; absolute times are only context.

    python bench/core_latency.py [--repeats 7]
"""
import argparse
import statistics
import time

import torch

from memoryllm_repro import MemoryLLM


def median_time(fn, repeats):
    fn()   # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = MemoryLLM.from_base("smollm2-135m", num_blocks=30, num_tokens=64)
    V = model.base.config.vocab_size
    ctx = torch.randint(100, V, (1, 128))
    question = torch.randint(100, V, (1, 16))
    with torch.no_grad():
        for i in range(40):   # a full, non-tiled pool
            model.inject_memory(torch.randint(100, V, (1, 128)))
        gen = dict(max_new_tokens=10, min_new_tokens=10, eos_token_id=None)

        def write():
            with model.memory_snapshot():
                model.inject_memory(ctx)

        t_write = median_time(write, args.repeats)
        t_plain_fwd = median_time(lambda: model.base.model(torch.randint(100, V, (1, 64 + 128))), args.repeats)
        t_read = median_time(lambda: model.generate(question, **gen), args.repeats)
        t_base = median_time(lambda: model.generate(question, use_memory=False, **gen), args.repeats)
        t_ctx = median_time(lambda: model.generate(torch.cat([ctx, question], 1), use_memory=False, **gen),
                            args.repeats)
        # first question after a write: the memory keys/values must be updated (incrementally)
        def read_after_write():
            with model.memory_snapshot():
                model.inject_memory(ctx)
                model.generate(question, **gen)
        t_rw = median_time(read_after_write, args.repeats)

    rows = [
        ("inject_memory + commit, 128 tokens", t_write, "plain forward, K+n=192 tokens", t_plain_fwd),
        ("answer 16+10 tokens, full memory", t_read, "backbone, no memory", t_base),
        ("answer 16+10 tokens, full memory", t_read, "backbone, 128-token context in prompt", t_ctx),
        ("write + answer (cache refresh)", t_rw, "write + backbone answer", t_write + t_base),
    ]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, N={model.N}, K={model.K}, fp32")
    print(f"{'measured':40s} {'s':>7s}   {'baseline':40s} {'s':>7s}  ratio")
    for a, ta, b, tb in rows:
        print(f"{a:40s} {ta:7.3f}   {b:40s} {tb:7.3f}  {ta / tb:5.2f}")


if __name__ == "__main__":
    main()
