"""Diagnostic probes: which property of a write or a question makes a MemoryLLM fail to recall it?

Every cell runs the retention protocol of `eval.retention` (write, optional unrelated writes, ask, greedy 10 tokens,
hit = answer in the output; also the gold answer's teacher-forced NLL, a continuous score that moves before a
greedy answer flips) on held-out facts, varying one thing from a shared baseline: a natural fact of the
hand-written dev set (`data/natural_facts.py`), written alone and as is, asked right after the write with
"Question: .. Answer:". Probes:

    form       natural (baseline) | natural with a "Context: " prefix | generator templates (held-out names,
               `GeneralistSamples(split="heldout")`) | world (the bundled retention set: the default checkpoint's
               own training format)
    length     the fact padded with unrelated prose to ~64 / 128 / 256 / 512 tokens (the fact in the middle)
    distance   0 / 1 / 5 / 10 / 20 unrelated ~64-token writes (held-out generic prose) between write and question
    prompt     "Question: .. Answer:" (baseline) | the chat template | a bare question line
    position   the fact at the start / middle / end of a 512-token write
    borderline the question with nothing written (the warm pool only); the same for the generator-form items
    reference  the ceiling a read is measured against: the fact in the prompt, the memory off, for the trained
               model ("model": "{fact}\nQuestion: .. Answer:", 10 tokens) and for the backbone without its LoRA
               ("backbone": fact and question in its chat template, 32 tokens); a read from memory cannot be
               expected to beat reading the text itself
    cause      (full preset) why recall falls m writes later: right after the write, the pool changed as m later
               writes would change it in one respect only: "drops" (the share of the fact's vectors m writes drop
               on average, replaced in place by older vectors), "shift" (the intact vectors moved m writes back),
               both, and m real writes of unrelated prose for reference

Only the public API is used (inject_memory, write_memory, expand_memories, memory_snapshot, generate,
memory_state, set_memory); the model's pool is restored afterwards. Examples of a cell run as one batch in
independent copies of the pool.

    python -m memoryllm_repro.eval.probes --model default --preset quick --threads 1
"""
from __future__ import annotations

import argparse
import contextlib
import random
import re
import time

import torch

from ..checkpoints import MODEL_SPEC_HELP, load_model
from ..editors.common import base_only
from .retention import _ids, answer_nll, answers, hit

PRESETS = {
    # the training-time validation: the three target numbers (right after, +10 writes, borderline) + the chat
    # prompt, the generator's own form and a 512-token write; see the report for its time on one CPU thread
    "quick": dict(n=8, lengths=(512,), distances=(0, 10), positions=(), prompts=("qa", "chat"),
                  forms=("natural", "templates"), causes=(),
                  references=("model", "backbone")),
    # the training-time validation of the generalist run from step ~1650: the two numbers it has to move (right
    # after, +10 writes) on the whole dev split, since 8 facts per cell (quick) move in steps of 0.125
    "distance": dict(n=40, lengths=(), distances=(0, 10), positions=(), prompts=("qa",), forms=("natural",),
                     causes=(), references=("model", "backbone")),
    "full": dict(n=20, lengths=(64, 128, 256, 512), distances=(0, 1, 5, 10, 20),
                 positions=("start", "middle", "end"), prompts=("qa", "chat", "bare"),
                 forms=("natural", "context_prefix", "templates", "world"), causes=(10,),
                 references=("model", "backbone")),
}


def prompt_text(tok, question: str, style: str) -> str:
    if style == "qa":
        return f"Question: {question} Answer:"
    if style == "chat":
        return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)
    if style == "bare":
        return question + "\n"
    raise ValueError(f"unknown prompt style {style!r} (qa, chat, bare)")


class Filler:
    """Unrelated prose from the held-out generic documents (never trained on), by sentences."""

    def __init__(self, tok, texts: list[str]):
        self.tok = tok
        self.sents = [s for t in texts for s in re.split(r"(?<=[.!?])\s+", " ".join(t.split())) if len(s) > 2]
        self.lens = [len(x) for x in tok(self.sents, add_special_tokens=False).input_ids]

    def prose(self, rng: random.Random, n_tokens: int) -> list[str]:
        """Consecutive sentences, about n_tokens in all (never more than n_tokens + 8)."""
        out, n, i = [], 0, rng.randrange(len(self.sents))
        for _ in range(10000):
            if n >= n_tokens - 6:
                break
            if n + self.lens[i] <= n_tokens + 8:
                out.append(self.sents[i])
                n += self.lens[i] + 1
                i = (i + 1) % len(self.sents)
            else:       # too long for what is left: jump to another sentence
                i = rng.randrange(len(self.sents))
        return out

    def around(self, rng, fact: str, total: int, where: str) -> str:
        """`fact` inside unrelated prose, the whole write about `total` tokens; where: start/middle/end/random."""
        free = max(0, total - len(self.tok(fact, add_special_tokens=False).input_ids))
        frac = {"start": 0.0, "end": 1.0, "middle": 0.5}.get(where)
        before = int(free * (rng.random() if frac is None else frac))
        pre, post = self.prose(rng, before) if before > 8 else [], self.prose(rng, free - before) \
            if free - before > 8 else []
        return " ".join(pre + [fact] + post)


@torch.no_grad()
def _cell(model, tok, items: list[dict], style: str, ask_after: tuple[int, ...], distractors: list[torch.Tensor],
          write: bool = True, max_new_tokens: int = 10, batch: int = 8) -> dict[int, dict[str, list]]:
    """items [{write, question, answer}]: write each (in its own copy of the pool), then after m unrelated writes
    for every m in ask_after ask the question. Returns {m: {"hits": [per item], "nll": [the gold answer's
    teacher-forced NLL per item]}}; m = -1 means nothing was written.
    Items run `batch` at a time: each copy of a 30 x 1920 x 576 pool (and its projected keys/values) is ~0.2 GB."""
    prompts = [prompt_text(tok, it["question"], style) for it in items]
    golds = [it["answer"] for it in items]
    if not write:      # one pool read by all prompts: its keys and values are projected once
        with model.memory_snapshot():
            preds = answers(model, tok, prompts, max_new_tokens)
            return {-1: {"hits": [hit(p, g) for p, g in zip(preds, golds)],
                         "nll": answer_nll(model, tok, prompts, golds)}}
    out = {m: {"hits": [], "nll": []} for m in ask_after}
    for i in range(0, len(items), batch):
        group, qs = items[i:i + batch], prompts[i:i + batch]
        with model.memory_snapshot():
            deltas = [model.inject_memory(_ids(tok, it["write"]).to(model.device), update_memory=False)
                      for it in group]
            model.expand_memories(len(group))
            model.write_memory(torch.cat(deltas))
            del deltas
            for m in range(max(ask_after) + 1):
                if m in ask_after:
                    preds = answers(model, tok, qs, max_new_tokens)
                    out[m]["hits"] += [hit(p, it["answer"]) for p, it in zip(preds, group)]
                    out[m]["nll"] += answer_nll(model, tok, qs, golds[i:i + batch])
                if m < max(ask_after):
                    d = distractors[m % len(distractors)].to(model.device)
                    model.inject_memory(d.expand(len(group), -1))
    return out


@torch.no_grad()
def _in_prompt(model, tok, items: list[dict], backbone: bool) -> dict[str, list]:
    """{"hits", "nll"} with each item's write in the prompt before its question and the memory off. The trained
    model gets the probes' own format ("{write}\nQuestion: .. Answer:", 10 tokens); the backbone (LoRA off) gets
    its native chat template and 32 tokens, since it answers "Question: .. Answer:" with an empty line and in the
    chat template it answers in a full sentence (the ceiling should be its best, not our format's)."""
    if backbone:
        prompts = [prompt_text(tok, it["write"] + "\n" + it["question"], "chat") for it in items]
    else:
        prompts = [it["write"] + "\n" + prompt_text(tok, it["question"], "qa") for it in items]
    golds = [it["answer"] for it in items]
    with base_only(model) if backbone else contextlib.nullcontext():
        preds = answers(model, tok, prompts, 32 if backbone else 10, use_memory=False)
        return {"hits": [hit(p, g) for p, g in zip(preds, golds)],
                "nll": answer_nll(model, tok, prompts, golds, use_memory=False)}


def pool_as_if_later(pool, before, K: int, m: int, generator, drops: bool, shift: bool):
    """`pool` [B, L, N, d] right after a write (its last K vectors per layer are the fact's), changed as m later
    writes would change it in one respect only. drops: the fact loses round(K (1 - (1-K/N)^m)) vectors per layer
    (the average over m writes), each replaced in place by a random one of the N-K oldest vectors of `before`
    (the pool before the write; a vector may then appear twice), so positions are kept; shift: the fact's intact
    block moves m writes back (the K*m oldest vectors move behind it)."""
    B, L, N, d = pool.shape
    if m * K > N - K:
        raise ValueError(f"cannot shift a write {m} writes back in a pool of {N // K} writes")
    out = pool.clone()
    if drops:
        lost = round(K * (1 - (1 - K / N) ** m))
        for b in range(B):
            for layer in range(L):
                where = torch.randperm(K, generator=generator)[:lost] + N - K
                out[b, layer, where] = before[b, layer, torch.randint(0, N - K, (lost,), generator=generator)]
    if shift:
        old, fact = out[:, :, :N - K], out[:, :, N - K:]
        out = torch.cat([old[:, :, m * K:], fact, old[:, :, :m * K]], 2)
    return out


@torch.no_grad()
def _causes(model, tok, items: list[dict], m: int, distractors: list[torch.Tensor], seed: int) -> dict:
    """{"hits", "nll"} per condition of the `cause` probe (see the module docstring), one item at a time."""
    g = torch.Generator().manual_seed(seed)
    out = {k: {"hits": [], "nll": []} for k in ("drops", "shift", "drops + shift", "real")}

    def ask(name, q, it):
        out[name]["hits"].append(hit(answers(model, tok, q)[0], it["answer"]))
        out[name]["nll"] += answer_nll(model, tok, q, [it["answer"]])
    for it in items:
        q = [prompt_text(tok, it["question"], "qa")]
        with model.memory_snapshot():
            before = model.memory_state()["memory"].clone()          # [1, L, N, d]
            model.inject_memory(_ids(tok, it["write"]).to(model.device))
            after = model.memory_state()["memory"].clone()
            for name, drops, shift in (("drops", True, False), ("shift", False, True), ("drops + shift", True, True)):
                model.set_memory(pool_as_if_later(after, before, model.K, m, g, drops, shift))
                ask(name, q, it)
            model.set_memory(after)
            for j in range(m):
                model.inject_memory(distractors[j % len(distractors)].to(model.device))
            ask("real", q, it)
    return out


def run_probes(model, tok, preset: str = "quick", n: int | None = None, seed: int = 0, progress: bool = True,
               **overrides):
    """The probe table as a DataFrame (probe, setting, n, accuracy, answer_nll: the gold answer's mean teacher-forced
    NLL in nats per token, write_tokens); `preset` "quick", "distance" or "full", `n` examples per cell (at most
    40: the size of the natural dev split), any preset field overridable."""
    import pandas as pd

    from ..data.corpus import GENERIC_HOLDOUT, generic_texts
    from ..data.natural_facts import load_natural_facts
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} ({', '.join(PRESETS)})")
    cfg = {**PRESETS[preset], **overrides}
    unknown = set(overrides) - set(PRESETS["full"])
    if unknown:
        raise ValueError(f"unknown probe options {sorted(unknown)}")
    n = n or cfg["n"]
    dev = load_natural_facts("dev")
    if not 1 <= n <= len(dev):
        raise ValueError(f"n must be in 1..{len(dev)} (the natural dev split), got {n}")
    if any(d < 0 for d in cfg["distances"]) or any(x < 16 for x in cfg["lengths"]):
        raise ValueError("distances must be >= 0 and lengths >= 16 tokens")
    if any(not 1 <= m < model.N // model.K for m in cfg.get("causes", ())):
        raise ValueError(f"causes must be in 1..{model.N // model.K - 1} (N/K - 1 writes back), got {cfg['causes']}")
    if set(cfg.get("references", ())) - {"model", "backbone"}:
        raise ValueError(f"references must be among model, backbone, got {cfg['references']}")
    rng = random.Random(f"probes-{seed}")
    facts = dev[:n]
    filler = Filler(tok, generic_texts()[-GENERIC_HOLDOUT:])
    # unrelated writes: ~64-token runs of held-out prose (K = 64: one block of memory each)
    distractors = [_ids(tok, " ".join(filler.prose(rng, rng.randint(48, 80)))) for _ in range(25)]
    rows, t0 = [], time.time()

    def add(probe, setting, items, cell):
        toks = [len(tok(it["write"], add_special_tokens=False).input_ids) for it in items] if items[0].get(
            "write") else [0]
        hits, nll = cell["hits"], cell["nll"]
        rows.append(dict(probe=probe, setting=str(setting), n=len(hits), accuracy=sum(hits) / len(hits),
                         answer_nll=sum(nll) / len(nll), write_tokens=round(sum(toks) / len(toks))))
        if progress:
            print(f"  [{time.time() - t0:6.1f}s] {probe:10s} {str(setting):16s} acc={rows[-1]['accuracy']:.2f} "
                  f"nll={rows[-1]['answer_nll']:.2f}", flush=True)

    base = [dict(write=f["context"], question=f["question"], answer=f["answer"]) for f in facts]
    # baseline + distance in one chain (m = 0 is the baseline cell of every probe)
    chain = _cell(model, tok, base, "qa", tuple(sorted(set(cfg["distances"]) | {0})), distractors)
    add("form", "natural", base, chain[0])
    for m in cfg["distances"]:
        add("distance", f"+{m} writes", base, chain[m])
    nothing = _cell(model, tok, base, "qa", (0,), distractors, write=False)[-1]
    add("borderline", "natural", [dict(write="")], nothing)
    for form in cfg["forms"]:
        if form == "natural":
            continue
        if form == "context_prefix":
            items = [dict(it, write="Context: " + it["write"]) for it in base]
        elif form == "templates":
            from ..data.generalist import GeneralistSamples
            qa = GeneralistSamples(tok, seed=seed, split="heldout").qa_examples(n, seed=seed)
            items = [dict(write=q["context"], question=q["question"], answer=q["answer"]) for q in qa]
            add("borderline", "templates", [dict(write="")],
                _cell(model, tok, items, "qa", (0,), distractors, write=False)[-1])
        elif form == "world":
            from ..data.retention_set import heldout_retention_set
            ex, _ = heldout_retention_set(n, n_distractors=2, seed=seed)
            items = [dict(write="Context: " + e.context, question=e.question, answer=e.answer) for e in ex]
        else:
            raise ValueError(f"unknown form {form!r}")
        add("form", form, items, _cell(model, tok, items, "qa", (0,), distractors)[0])
    add("length", "fact only", base, chain[0])
    middle512 = None
    for L in cfg["lengths"]:     # the fact in the middle: length 512 is also the position probe's "middle"
        items = [dict(it, write=filler.around(rng, it["write"], L, "middle")) for it in base]
        cell = _cell(model, tok, items, "qa", (0,), distractors)[0]
        add("length", L, items, cell)
        if L == 512:
            middle512 = (items, cell)
    add("prompt", "qa", base, chain[0])
    for style in cfg["prompts"]:
        if style != "qa":
            add("prompt", style, base, _cell(model, tok, base, style, (0,), distractors)[0])
    for where in cfg["positions"]:
        if where == "middle" and middle512 is not None:
            add("position", "middle of 512", *middle512)
            continue
        items = [dict(it, write=filler.around(rng, it["write"], 512, where)) for it in base]
        add("position", f"{where} of 512", items, _cell(model, tok, items, "qa", (0,), distractors)[0])
    for who in cfg.get("references", ()):
        add("reference", f"in prompt: {who}", base, _in_prompt(model, tok, base, who == "backbone"))
    for m in cfg.get("causes", ()):
        for name, cell in _causes(model, tok, base, m, distractors, seed).items():
            add("cause", f"+{m} writes: {name}" if name != "real" else f"+{m} real writes", base, cell)
    df = pd.DataFrame(rows)
    df.attrs["seconds"] = time.time() - t0
    return df


def main(argv=None):
    ap = argparse.ArgumentParser(description="Diagnostic recall probes for a MemoryLLM (markdown table).")
    ap.add_argument("--model", default="default", help="the model: " + MODEL_SPEC_HELP)
    ap.add_argument("--preset", default="quick", choices=sorted(PRESETS),
                    help="quick: the training-time validation (~2-3 min on one thread); distance: right after "
                         "and +10 writes on all 40 dev facts; full: every probe")
    ap.add_argument("--n", type=int, default=None, help="examples per cell (default: the preset's)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the filler text and distractor writes")
    ap.add_argument("--only", default=None,
                    help="comma-separated probes to run (form, length, distance, prompt, position, cause, "
                         "reference); the baseline cell and the borderline always run. Default: every probe of "
                         "the preset")
    ap.add_argument("--out", default=None, help="also write the table as CSV here")
    a = ap.parse_args(argv)
    overrides = {}
    if a.only:
        fields = {"form": "forms", "length": "lengths", "distance": "distances", "prompt": "prompts",
                  "position": "positions", "cause": "causes", "reference": "references"}
        keep = set(a.only.split(","))
        if keep - set(fields):
            ap.error(f"unknown probe(s) {sorted(keep - set(fields))}; known: {', '.join(fields)}")
        baseline = {"forms": ("natural",), "distances": (0,), "prompts": ("qa",)}
        overrides = {f: baseline.get(f, ()) for name, f in fields.items() if name not in keep}
    if a.threads:
        torch.set_num_threads(a.threads)
    model, tok, desc = load_model(a.model)
    model.eval()
    t = time.time()
    df = run_probes(model, tok, a.preset, a.n, a.seed, **overrides)
    print(f"\n{desc}; preset {a.preset}, {df.n.max()} examples per cell, {time.time() - t:.0f} s on "
          f"{torch.get_num_threads()} thread(s)\n")
    print(df.to_markdown(index=False, floatfmt=".2f"))
    if a.out:
        df.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
