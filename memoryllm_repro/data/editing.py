"""Model-editing data (Table 1): ROME's CounterFact and zsRE formats, and a bundled set of well-known facts.

* `load_counterfact` / `load_zsre` read ROME's `counterfact.json` / `zsre_mend_eval.json` (local files or hub
  dataset names via `datasets`) into the same record dicts.
* `bundled_counterfact` / `bundled_zsre` build records in those formats from small relation tables of facts a
  small model can know (cities and countries, official languages, landmarks, capitals). `eval.editing.filter_known`
  (it needs a model, so it lives above `data/`) keeps the records whose true object the unedited backbone prefers
  over the new one, so an edit has something to change; `python -m memoryllm_repro.eval.editing` rebuilds them.
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
CAPITAL_OF = {city: [country] for country, city in CAPITAL.items()}
CONTINENT = {
    "Europe": ["France", "Germany", "Italy", "Spain", "Poland", "Sweden", "Norway", "Greece", "Portugal", "Austria",
               "Ireland", "Belgium", "Switzerland", "Finland", "Denmark", "Hungary"],
    "Asia": ["Japan", "China", "India", "Thailand", "Vietnam", "South Korea", "Indonesia", "Pakistan", "Nepal",
             "Mongolia"],
    "Africa": ["Egypt", "Kenya", "Nigeria", "Ethiopia", "Morocco", "Ghana", "South Africa", "Tanzania"],
    "South America": ["Brazil", "Argentina", "Peru", "Chile", "Colombia", "Venezuela", "Bolivia"],
    "North America": ["Canada", "Mexico", "the United States", "Cuba", "Guatemala"],
}
CURRENCY = {"euro": ["France", "Germany", "Italy", "Spain", "Portugal", "Greece", "Austria", "Ireland", "Finland"],
            "yen": ["Japan"], "rupee": ["India", "Pakistan"], "ruble": ["Russia"], "peso": ["Mexico", "Argentina"],
            "pound sterling": ["the United Kingdom"], "yuan": ["China"], "won": ["South Korea"],
            "krona": ["Sweden"], "real": ["Brazil"], "franc": ["Switzerland"], "zloty": ["Poland"]}
AUTHOR = {"William Shakespeare": ["Hamlet", "Macbeth", "Romeo and Juliet", "Othello", "King Lear"],
          "J. K. Rowling": ["Harry Potter and the Philosopher's Stone", "Harry Potter and the Chamber of Secrets"],
          "George Orwell": ["Nineteen Eighty-Four", "Animal Farm"], "Leo Tolstoy": ["War and Peace",
          "Anna Karenina"], "Jane Austen": ["Pride and Prejudice", "Sense and Sensibility", "Emma"],
          "Charles Dickens": ["Oliver Twist", "A Tale of Two Cities", "Great Expectations", "David Copperfield"],
          "Mark Twain": ["The Adventures of Tom Sawyer", "Adventures of Huckleberry Finn"],
          "J. R. R. Tolkien": ["The Lord of the Rings", "The Hobbit"], "Homer": ["the Iliad", "the Odyssey"],
          "Miguel de Cervantes": ["Don Quixote"], "Herman Melville": ["Moby-Dick"],
          "Fyodor Dostoevsky": ["Crime and Punishment", "The Brothers Karamazov"],
          "F. Scott Fitzgerald": ["The Great Gatsby"], "Harper Lee": ["To Kill a Mockingbird"],
          "Mary Shelley": ["Frankenstein"], "Bram Stoker": ["Dracula"]}
SPORT = {"basketball": ["Michael Jordan", "LeBron James", "Kobe Bryant", "Stephen Curry", "Shaquille O'Neal"],
         "soccer": ["Lionel Messi", "Cristiano Ronaldo", "Pele", "Neymar", "Zinedine Zidane", "David Beckham"],
         "tennis": ["Roger Federer", "Serena Williams", "Rafael Nadal", "Novak Djokovic", "Andy Murray"],
         "golf": ["Tiger Woods", "Jack Nicklaus"], "baseball": ["Babe Ruth", "Derek Jeter"],
         "boxing": ["Muhammad Ali", "Mike Tyson"], "ice hockey": ["Wayne Gretzky"]}
MAKER = {"Apple": ["the iPhone", "the iPad", "the MacBook"], "Microsoft": ["Windows", "the Xbox", "Microsoft Word"],
         "Sony": ["the PlayStation", "the Walkman"], "Nintendo": ["the Nintendo Switch", "the Game Boy"],
         "Toyota": ["the Toyota Corolla", "the Prius", "the Camry"], "Boeing": ["the Boeing 747", "the Boeing 737"],
         "Google": ["Android", "Google Chrome"], "Samsung": ["the Galaxy S"], "Ford": ["the Mustang", "the Model T"],
         "Tesla": ["the Model S", "the Model 3"]}
PAINTER = {"Leonardo da Vinci": ["the Mona Lisa", "The Last Supper"], "Vincent van Gogh": ["The Starry Night",
           "Sunflowers"], "Pablo Picasso": ["Guernica"], "Edvard Munch": ["The Scream"],
           "Michelangelo": ["the ceiling of the Sistine Chapel"], "Johannes Vermeer": ["Girl with a Pearl Earring"],
           "Sandro Botticelli": ["The Birth of Venus"], "Salvador Dali": ["The Persistence of Memory"]}

RELATIONS = {   # relation: (table as object -> subjects, prompt, paraphrase templates)
    "P17": (CITY_COUNTRY, "{} is located in the country of", ["The city of {} is in the country of",
                                                              "{} is a city in the country of"]),
    "P37": (LANGUAGE, "The official language of {} is", ["In {}, the official language is",
                                                         "People in {} officially speak"]),
    "P131": (LANDMARK_CITY, "{} is located in the city of", ["You can find {} in the city of",
                                                             "{} stands in the city of"]),
    "P36": (CAPITAL_OF, "The capital of {} is", ["The capital city of {} is", "{} has its capital in"]),
    "P30": (CONTINENT, "{} is located on the continent of", ["{} is a country in", "The country of {} lies in"]),
    "P38": (CURRENCY, "The currency of {} is the", ["In {}, people pay with the", "The official currency of {} is "
                                                                                  "the"]),
    "P50": (AUTHOR, "{} was written by", ["The author of {} is", "{} is a book by"]),
    "P641": (SPORT, "{} professionally plays the sport of", ["{} is famous for playing",
                                                             "The sport {} is known for is"]),
    "P176": (MAKER, "{} is produced by", ["{} is made by the company", "The company behind {} is"]),
    "P170": (PAINTER, "{} was painted by", ["The painter of {} is", "{} is a painting by"]),
}
QUESTIONS = {   # relation: (question, rephrased question), for the zsRE-style set
    "P17": ("Which country is {} in?", "In which country is the city of {}?"),
    "P37": ("What is the official language of {}?", "Which language is official in {}?"),
    "P131": ("In which city is {}?", "Which city is home to {}?"),
    "P36": ("What is the capital of {}?", "Which city is the capital of {}?"),
    "P30": ("On which continent is {}?", "Which continent is {} part of?"),
    "P38": ("What is the currency of {}?", "Which currency is used in {}?"),
    "P50": ("Who wrote {}?", "Who is the author of {}?"),
    "P641": ("Which sport does {} play?", "What sport is {} known for?"),
    "P176": ("Which company makes {}?", "Who produces {}?"),
    "P170": ("Who painted {}?", "Which artist painted {}?"),
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
    """zsRE-format records (src question, alt answer, rephrase, loc question and answer) from the same tables."""
    rng = random.Random(f"zsre-{seed}")
    facts = [(rid, s, obj) for rid, (table, _, _) in RELATIONS.items() for obj, subs in table.items() for s in subs]
    out = []
    for rid, s, obj in facts:
        table = RELATIONS[rid][0]
        q, rephrase = QUESTIONS[rid]
        o_rid, o_s, o_obj = rng.choice([f for f in facts if f[1] != s])
        out.append({"subject": s, "src": q.format(s), "answers": [obj], "rephrase": rephrase.format(s),
                    "alt": rng.choice([o for o in table if o != obj]), "loc": QUESTIONS[o_rid][0].format(o_s),
                    "loc_ans": o_obj})
    return out


def edit_fields(record: dict) -> tuple[str, str, str]:
    """(prompt with the subject filled in, true target, new target) of a CounterFact or zsRE record."""
    if "requested_rewrite" in record:
        rw = record["requested_rewrite"]
        return rw["prompt"].format(rw["subject"]), rw["target_true"]["str"], rw["target_new"]["str"]
    return record["src"], record["answers"][0], record["alt"]


def subsample(records: list[dict], n: int | None, seed: int | None = 0) -> list[dict]:
    """n records: a seeded random sample (the bundled sets are ordered by relation), or the first n with
    seed=None (ROME's convention for the real files)."""
    if n is None or n >= len(records):
        return list(records)
    return records[:n] if seed is None else random.Random(seed).sample(records, n)


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
