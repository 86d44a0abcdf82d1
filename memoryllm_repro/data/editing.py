"""Model-editing data (Table 1): ROME's CounterFact and zsRE formats, and a bundled set of well-known facts.

* `load_counterfact` / `load_zsre` read ROME's `counterfact.json` / `zsre_mend_eval.json` (local files or hub
  dataset names via `datasets`) into the same record dicts.
* `bundled_counterfact` / `bundled_zsre` build records in those formats from small relation tables of facts a
  small model can know (cities and countries, official languages, landmarks, capitals). `filter_known` keeps the
  records whose true object the unedited backbone prefers over the new one, so an edit has something to change.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

CITY_COUNTRY = {
    "France": ["Paris", "Lyon", "Marseille", "Bordeaux", "Nice"], "Germany": ["Berlin", "Munich", "Hamburg",
    "Frankfurt", "Cologne"], "Italy": ["Rome", "Milan", "Naples", "Florence", "Venice"], "Spain": ["Madrid",
    "Barcelona", "Seville", "Valencia"], "Japan": ["Tokyo", "Osaka", "Kyoto", "Hiroshima"], "China": ["Beijing",
    "Shanghai", "Shenzhen", "Guangzhou"], "Russia": ["Moscow", "Saint Petersburg", "Novosibirsk"],
    "Canada": ["Toronto", "Montreal", "Vancouver", "Ottawa"], "Australia": ["Sydney", "Melbourne", "Brisbane",
    "Perth"], "India": ["Mumbai", "Delhi", "Bangalore", "Kolkata"], "Brazil": ["Rio de Janeiro", "Sao Paulo",
    "Brasilia"], "Egypt": ["Cairo", "Alexandria"], "Mexico": ["Mexico City", "Guadalajara", "Cancun"],
    "Turkey": ["Istanbul", "Ankara", "Izmir"], "Greece": ["Athens", "Thessaloniki"], "Portugal": ["Lisbon",
    "Porto"], "Netherlands": ["Amsterdam", "Rotterdam"], "Sweden": ["Stockholm", "Gothenburg"],
    "Poland": ["Warsaw", "Krakow"], "Argentina": ["Buenos Aires", "Cordoba"], "Ireland": ["Dublin", "Cork"],
    "England": ["London", "Manchester", "Liverpool", "Birmingham"], "Scotland": ["Edinburgh", "Glasgow"],
    "Austria": ["Vienna", "Salzburg"], "South Korea": ["Seoul", "Busan"], "Thailand": ["Bangkok"],
    "Norway": ["Oslo", "Bergen"], "Kenya": ["Nairobi", "Mombasa"],
}
LANGUAGE = {
    "French": ["France"], "German": ["Germany", "Austria"], "Spanish": ["Spain", "Mexico", "Argentina", "Colombia",
    "Chile", "Peru"], "Italian": ["Italy"], "Portuguese": ["Portugal", "Brazil"], "Japanese": ["Japan"],
    "Russian": ["Russia"], "Arabic": ["Egypt", "Saudi Arabia", "Morocco", "Iraq"], "Greek": ["Greece"],
    "Turkish": ["Turkey"], "Dutch": ["the Netherlands"], "Swedish": ["Sweden"], "Polish": ["Poland"],
    "Korean": ["South Korea"], "Thai": ["Thailand"], "English": ["Australia", "the United States", "England"],
}
LANDMARK_CITY = {
    "Paris": ["the Eiffel Tower", "the Louvre", "Notre-Dame de Paris", "the Arc de Triomphe"],
    "Rome": ["the Colosseum", "the Pantheon", "the Trevi Fountain"], "London": ["Big Ben", "Tower Bridge",
    "Buckingham Palace", "the British Museum"], "New York": ["the Statue of Liberty", "the Empire State Building",
    "Central Park", "Times Square"], "Berlin": ["the Brandenburg Gate", "the Reichstag"], "Athens":
    ["the Acropolis", "the Parthenon"], "Moscow": ["the Kremlin", "Red Square"], "Beijing": ["the Forbidden City",
    "Tiananmen Square"], "Sydney": ["the Sydney Opera House", "the Sydney Harbour Bridge"], "San Francisco":
    ["the Golden Gate Bridge", "Alcatraz"], "Barcelona": ["the Sagrada Familia", "Park Guell"],
    "Agra": ["the Taj Mahal"], "Dubai": ["the Burj Khalifa"], "Toronto": ["the CN Tower"],
}
CAPITAL = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
           "China": "Beijing", "Russia": "Moscow", "Canada": "Ottawa", "Australia": "Canberra", "Egypt": "Cairo",
           "Greece": "Athens", "Portugal": "Lisbon", "Poland": "Warsaw", "Austria": "Vienna", "Sweden": "Stockholm",
           "Norway": "Oslo", "Ireland": "Dublin", "Kenya": "Nairobi", "Thailand": "Bangkok", "Turkey": "Ankara",
           "Argentina": "Buenos Aires", "Mexico": "Mexico City", "India": "New Delhi", "Brazil": "Brasilia",
           "South Korea": "Seoul", "England": "London", "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana"}

RELATIONS = {   # relation: (table as object -> subjects, prompt, paraphrase templates)
    "P17": (CITY_COUNTRY, "{} is located in the country of", ["The city of {} is in the country of",
                                                              "{} is a city in the country of"]),
    "P37": (LANGUAGE, "The official language of {} is", ["In {}, the official language is",
                                                         "People in {} officially speak"]),
    "P131": (LANDMARK_CITY, "{} is located in the city of", ["You can find {} in the city of",
                                                             "{} stands in the city of"]),
}


def bundled_counterfact(seed: int = 0) -> list[dict]:
    """CounterFact-format records: every (subject, true object) of the tables, a new object from the same
    relation, two paraphrase prompts, and neighborhood prompts about other subjects with the same true object."""
    rng = random.Random(f"cf-{seed}")
    out = []
    for rid, (table, prompt, paraphrases) in RELATIONS.items():
        objects = list(table)
        for obj, subjects in table.items():
            for s in subjects:
                new = rng.choice([o for o in objects if o != obj])
                neighbors = [t for t in subjects if t != s]   # may be empty: specificity then skips it
                out.append({"case_id": len(out), "requested_rewrite": {
                    "prompt": prompt, "relation_id": rid, "subject": s,
                    "target_new": {"str": new}, "target_true": {"str": obj}},
                    "paraphrase_prompts": [p.format(s) for p in paraphrases],
                    "neighborhood_prompts": [prompt.format(t) for t in neighbors][:5]})
    return out


def bundled_zsre(seed: int = 0) -> list[dict]:
    """zsRE-format records (src question, alt answer, rephrase, loc question and answer) about capitals."""
    rng = random.Random(f"zsre-{seed}")
    countries = list(CAPITAL)
    out = []
    for c in countries:
        new = rng.choice([CAPITAL[o] for o in countries if CAPITAL[o] != CAPITAL[c]])
        other = rng.choice([o for o in countries if o != c])
        out.append({"subject": c, "src": f"What is the capital of {c}?", "answers": [CAPITAL[c]], "alt": new,
                    "rephrase": f"Which city is the capital of {c}?", "loc": f"What is the capital of {other}?",
                    "loc_ans": CAPITAL[other]})
    return out


def _load_json(source, split="train"):
    if Path(source).exists():
        return json.loads(Path(source).read_text())
    from datasets import load_dataset
    return list(load_dataset(source, split=split))


def load_counterfact(source) -> list[dict]:
    """ROME's counterfact.json (a list of records with requested_rewrite, paraphrase/neighborhood prompts)."""
    recs = _load_json(source)
    for r in recs:
        rw = r["requested_rewrite"]
        if "{}" not in rw["prompt"]:
            raise ValueError(f"case {r.get('case_id')}: prompt has no '{{}}' for the subject")
    return recs


def load_zsre(source) -> list[dict]:
    """ROME's zsre_mend_eval.json (src, alt, rephrase, loc, loc_ans, answers)."""
    recs = _load_json(source)
    for r in recs:
        missing = {"src", "alt", "rephrase", "loc", "loc_ans"} - set(r)
        if missing:
            raise ValueError(f"zsRE record without {sorted(missing)}")
        r["loc"] = r["loc"].replace("nq question: ", "").strip()
        if not r["loc"].endswith("?"):
            r["loc"] += "?"
    return recs


def filter_known(model, tok, records: list[dict]) -> list[dict]:
    """Keep the records whose true object the unedited backbone prefers to the new one on the edit prompt
    (CounterFact) or the question (zsRE)."""
    from ..eval.editing import target_logprob
    keep = []
    for r in records:
        if "requested_rewrite" in r:
            rw = r["requested_rewrite"]
            prompt, true, new = rw["prompt"].format(rw["subject"]), rw["target_true"]["str"], rw["target_new"]["str"]
        else:
            prompt, true, new = r["src"], r["answers"][0], r["alt"]
        if target_logprob(model, tok, prompt, true, use_memory=False) > target_logprob(model, tok, prompt, new,
                                                                                       use_memory=False):
            keep.append(r)
    return keep


def write_bundled(out_dir="data/editing", seed: int = 0) -> dict:
    """Build the bundled sets, keep what SmolLM2 knows, write them in ROME's formats. Returns counts."""
    from ..backbones import load_tokenizer
    from ..model import MemoryLLM
    model = MemoryLLM.from_base("smollm2-135m", num_blocks=1, num_tokens=16)
    tok = load_tokenizer("smollm2-135m")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, records in (("counterfact_bundled.json", bundled_counterfact(seed)),
                          ("zsre_bundled.json", bundled_zsre(seed))):
        kept = filter_known(model, tok, records)
        (out / name).write_text(json.dumps(kept, indent=1))
        counts[name] = (len(kept), len(records))
    return counts


if __name__ == "__main__":
    print(write_bundled())
