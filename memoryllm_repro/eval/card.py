"""The numbers of the default checkpoint's model card (MODEL_CARD.md), in one command:

    python -m memoryllm_repro.eval.card --model default --out results/model_card

Held-out retention (entities never seen in training), loss on x2 with and without memory for held-out fact and
generic documents (trained model and the untrained wrapper), and perplexity of held-out generic text.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from ..checkpoints import MODEL_SPEC_HELP, load_model
from ..results import results_dir, write_run
from .lm import heldout_fact_pairs, heldout_generic_pairs, memory_loss, perplexity
from .retention import run_figure5, summarize


def model_card(model_spec="default", num_examples=50, num_updates=12, out=None, threads=0) -> dict:
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    model, tok, desc = load_model(model_spec)
    facts, generic = heldout_fact_pairs(tok), heldout_generic_pairs(tok)
    card = {"model": desc, "N": model.N, "K": model.K}
    card["loss_after"] = {"facts": memory_loss(model, facts), "generic": memory_loss(model, generic)}
    card["perplexity"] = {"trained_no_memory": perplexity(model, tok, use_memory=False),
                          "trained_warm_memory": perplexity(model, tok, use_memory=True)}
    if model.config.lora:
        with model.adapters_disabled():
            card["perplexity"]["base_model"] = perplexity(model, tok, use_memory=False)
    records = run_figure5(model, tok, ["bundled"], num_examples, num_updates, seed=1, batch_size=8)
    summ = summarize(records)
    card["retention"] = {f"{r.condition}@{r.step}": round(r.accuracy, 3) for r in summ.itertuples()}
    untrained, _, _ = load_model("untrained")
    untrained.warm_up(tokenizer=tok)
    card["loss_before"] = {"facts": memory_loss(untrained, facts), "generic": memory_loss(untrained, generic)}
    card["seconds"] = round(time.time() - t0, 1)
    d = results_dir("model_card", out)
    write_run(d, records.to_dict("records"), {"model": model_spec, "num_examples": num_examples,
                                              "num_updates": num_updates}, extra={"card": card})
    summ.to_csv(d / "summary.csv", index=False)
    (d / "card.json").write_text(json.dumps(card, indent=1))
    (d / "card.md").write_text(card_markdown(card, num_examples, num_updates))
    return card


def card_markdown(card: dict, num_examples: int, num_updates: int) -> str:
    r = card["retention"]
    steps = sorted(int(k.split("@")[1]) for k in r if k.startswith("memory@"))
    acc = " | ".join(f"{r[f'memory@{t}']:.2f}" for t in steps)
    lines = [f"Model: {card['model']} (N = {card['N']}, K = {card['K']})", "",
             f"Held-out retention ({num_examples} questions about entities never seen in training; update 1 = the "
             f"context, then one unrelated context per update; hit = answer in 10 greedy tokens):", "",
             "| update | " + " | ".join(str(t) for t in steps) + " |",
             "|---|" + "---|" * len(steps), f"| accuracy | {acc} |", "",
             f"- borderline (context never written): {r['borderline@0']:.2f}",
             f"- the same model, memory off, context in the prompt: {r['context_in_prompt@0']:.2f}",
             f"- the base model (no LoRA), context in the prompt: {r['base_context_in_prompt@0']:.2f}", "",
             "Loss on x2 after writing x1 (held-out documents), with memory / without memory:", "",
             "| documents | untrained MemoryLLM | trained |", "|---|---|---|"]
    for k in ("facts", "generic"):
        b, a = card["loss_before"][k], card["loss_after"][k]
        lines.append(f"| {k} (n={a['n']}) | {b['loss_with_memory']:.3f} / {b['loss_without_memory']:.3f} | "
                     f"{a['loss_with_memory']:.3f} / {a['loss_without_memory']:.3f} |")
    p = card["perplexity"]
    lines += ["", "Perplexity of held-out generic text: " + ", ".join(f"{k} {v:.2f}" for k, v in p.items()), ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="memoryllm-card", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure a MemoryLLM's model-card numbers: held-out retention over several updates, loss on "
                    "a continuation with and without memory (trained vs untrained), and perplexity of held-out "
                    "generic text. Writes card.json, card.md, summary.csv and the per-question records.",
        epilog="example:\n  memoryllm-card --model default --out results/model_card --threads 2")
    ap.add_argument("--model", default="default", help="which model to measure: " + MODEL_SPEC_HELP)
    ap.add_argument("--num-examples", type=int, default=50,
                    help="held-out retention questions (entities never seen in training; default 50)")
    ap.add_argument("--num-updates", type=int, default=12,
                    help="updates per retention question: the context, then unrelated contexts (default 12)")
    ap.add_argument("--out", default=None, help="output folder (default results/model_card)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's own choice)")
    a = ap.parse_args(argv)
    print(json.dumps(model_card(a.model, a.num_examples, a.num_updates, a.out, a.threads), indent=1))


if __name__ == "__main__":
    main()
