"""Generic English text for training and the no-regression check, written by the backbone itself.

No general-purpose English corpus can be downloaded here, so the project writes one: SmolLM2-135M-Instruct
continues a fixed list of varied openings with seeded nucleus sampling. The result is committed as
`data/generic_smollm2.jsonl` (regenerate with `python -m memoryllm_repro.data.generic`). Text in the backbone's
own distribution is exactly what a "did training hurt general ability?" perplexity check needs, and it keeps φ
from drifting towards the templates of the synthetic fact documents. Users with the network can train on C4 or
RedPajama instead (`memoryllm_repro.data.corpus`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

SUBJECTS = [
    "the history of bread", "how bridges are built", "the life cycle of a frog", "a rainy morning in a small town",
    "why the sky is blue", "the first day at a new job", "the rules of chess", "a trip to the mountains",
    "how vaccines work", "the invention of the printing press", "a recipe for vegetable soup", "saving money",
    "the solar system", "learning to play the piano", "a lost dog finding its way home", "the ocean tides",
    "how computers store numbers", "the causes of earthquakes", "an old lighthouse keeper", "growing tomatoes",
    "the importance of sleep", "a football match", "ancient Egypt", "the water cycle", "how bees make honey",
    "a letter to a friend", "the French Revolution", "photosynthesis", "a busy train station", "volcanoes",
    "the benefits of reading", "a birthday party", "how to write a good essay", "the Roman Empire",
    "climate and weather", "a visit to the dentist", "the human heart", "a mysterious old house",
    "electric cars", "the Olympic Games", "how airplanes fly", "a market in the city", "the moon landing",
    "friendship", "the Great Wall of China", "recycling plastic", "a winter holiday", "the brain and memory",
    "a famous painter", "a storm at sea", "how to make tea", "the internet", "dinosaurs", "a school library",
    "the invention of the telephone", "rivers and lakes", "a small bakery", "learning a new language",
    "the history of maps", "a camping trip", "how plants grow", "an argument between two brothers",
    "the stock market", "a museum of natural history", "healthy eating", "the desert at night",
    "a job interview", "the railway age", "birds that migrate", "a village festival", "the periodic table",
    "a detective solving a case", "how to repair a bicycle", "the Renaissance", "public transport",
]
OPENINGS = [
    "Here is a short article about {s}.\n\n", "{S}\n\n", "Chapter 1\n\nThis story is about {s}. ",
    "Many people ask about {s}. ", "In this essay I will describe {s}. ", "Notes on {s}:\n\n",
    "Everyone has an opinion about {s}, but ", "A teacher once explained {s} to her class. ",
]


def openings():
    for s in SUBJECTS:
        for o in OPENINGS:
            yield o.format(s=s, S=s[0].upper() + s[1:])


@torch.no_grad()
def generate_corpus(out: Path, n_docs: int = 600, new_tokens: int = 200, batch: int = 16, seed: int = 0):
    from tqdm.auto import tqdm

    from ..backbones import load_backbone, load_tokenizer
    torch.manual_seed(seed)
    model, tok = load_backbone("smollm2-135m"), load_tokenizer("smollm2-135m")
    tok.padding_side = "left"
    prompts = list(openings())
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(prompts), generator=g).tolist()
    prompts = [prompts[i % len(prompts)] for i in (order * (n_docs // len(prompts) + 1))[:n_docs]]
    out.parent.mkdir(parents=True, exist_ok=True)
    done = sum(1 for _ in out.open()) if out.exists() else 0     # resumable: append what is missing
    with out.open("a") as f:
        for start in tqdm(range(done, n_docs, batch), desc="generic text"):
            chunk = prompts[start:start + batch]
            enc = tok(chunk, return_tensors="pt", padding=True)
            torch.manual_seed(seed + start)
            ids = model.generate(**enc, max_new_tokens=new_tokens, do_sample=True, top_p=0.95, temperature=0.8,
                                 repetition_penalty=1.15, pad_token_id=tok.pad_token_id)
            for p, row in zip(chunk, ids[:, enc.input_ids.shape[1]:]):
                text = p + tok.decode(row, skip_special_tokens=True)
                f.write(json.dumps({"text": text.strip()}) + "\n")
            f.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="data/generic_smollm2.jsonl")
    ap.add_argument("--n-docs", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    generate_corpus(Path(a.out), n_docs=a.n_docs, seed=a.seed)


if __name__ == "__main__":
    main()
