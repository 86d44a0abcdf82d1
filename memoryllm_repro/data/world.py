"""A deterministic world of fictional people, towns and companies, for training and held-out evaluation.

Every entity name is made of invented syllables, so the backbone cannot know any fact about it: a correct answer
must come from the context (in memory or in the prompt). Entities are split by a hash of their name into
`train` (~90%) and `heldout` (~10%); training documents use only `train` entities and every evaluation set
(retention, long-context QA, editing-style questions) uses only `heldout` ones.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kl", "l", "m", "n", "p", "pr", "r", "s", "st", "t",
          "th", "v", "z", "sh", "c", "j", "w", "tr", "qu"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ou", "ia", "ei", "y"]
CODAS = ["", "", "", "n", "r", "l", "s", "th", "m", "x", "nd", "rk", "st", "ll"]
TOWN_SUFFIX = ["moor", "ford", "haven", "wick", "dale", "burg", "stead", "mouth", "field", "holm", ""]
COMPANY_SUFFIX = ["Works", "Industries", "and Sons", "Labs", "Trading Company", "Foundry", "Mills", "Press"]
JOBS = ["glassblower", "carpenter", "astronomer", "baker", "pilot", "surgeon", "librarian", "blacksmith",
        "violinist", "architect", "fisherman", "chemist", "tailor", "painter", "sailor", "teacher", "engineer",
        "beekeeper", "potter", "jeweler", "cartographer", "shepherd", "botanist", "clockmaker", "printer",
        "judge", "weaver", "geologist", "nurse", "mason", "brewer", "photographer", "diplomat", "farmer"]
ANIMALS = ["dog", "cat", "parrot", "horse", "goat", "rabbit", "tortoise", "owl", "donkey", "ferret"]
FOODS = ["plum cake", "lentil soup", "roast duck", "goat cheese", "honey bread", "apple pie", "fish stew",
         "walnut tart", "rice pudding", "pickled herring", "mushroom pie", "barley porridge"]
INSTRUMENTS = ["flute", "cello", "harp", "trumpet", "accordion", "drum", "lute", "violin", "oboe", "banjo"]
COLORS = ["green", "blue", "grey", "brown", "amber", "violet"]
PRODUCTS = ["copper kettles", "wool blankets", "pocket watches", "paper lanterns", "glass bottles",
            "leather boots", "clay pipes", "sailing ropes", "iron nails", "silk scarves", "wooden toys", "candles"]
KNOWN_FOR = ["its cheese market", "a bridge made of glass", "the oldest library in the region",
             "a festival of lanterns", "its salt mines", "a famous clock tower", "its apple orchards",
             "a lighthouse on a cliff", "its horse races", "a university of music", "its hot springs",
             "a stone circle", "its shipyards", "a yearly kite festival", "its blue-roofed houses"]


def _syllable(r: random.Random) -> str:
    return r.choice(ONSETS) + r.choice(VOWELS) + r.choice(CODAS)


def invented_word(r: random.Random, n: int) -> str:
    """n invented syllables, capitalised ("Troustgia"): a name the backbone cannot know anything about."""
    return "".join(_syllable(r) for _ in range(n)).capitalize()


def split_of(name: str, heldout_percent: int = 10) -> str:
    """'heldout' for ~10% of names, decided by a hash so it never depends on generation order."""
    h = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    return "heldout" if h % 100 < heldout_percent else "train"


@dataclass
class Person:
    name: str
    pronoun: str
    town: str
    year: int
    job: str
    animal: str
    pet: str
    food: str
    instrument: str
    company: str
    sibling: str
    eyes: str

    def facts(self) -> list[tuple[str, list[str], list[str]]]:
        """(statement, question forms, answer) per attribute; answers are short and appear in the statement."""
        n, p = self.name, self.pronoun
        P = p.capitalize()
        his = {"he": "his", "she": "her"}[p]
        return [
            (f"{n} was born in {self.town}.", [f"Where was {n} born?", f"In which town was {n} born?"],
             [self.town]),
            (f"{P} was born in the year {self.year}.", [f"In what year was {n} born?", f"When was {n} born?"],
             [str(self.year)]),
            (f"{n} worked as a {self.job} for most of {his} life.",
             [f"What did {n} work as?", f"What was the job of {n}?"], [self.job]),
            (f"{P} owned a {self.animal} named {self.pet}.",
             [f"What was the name of {n}'s {self.animal}?", f"What was {n}'s {self.animal} called?"], [self.pet]),
            (f"{n}'s favourite food was {self.food}.", [f"What was the favourite food of {n}?"], [self.food]),
            (f"In the evenings {n} played the {self.instrument}.",
             [f"Which instrument did {n} play?", f"What instrument did {n} play in the evenings?"],
             [self.instrument]),
            (f"{P} was employed by {self.company}.", [f"Which company employed {n}?"], [self.company]),
            (f"{n} had a sibling called {self.sibling}.", [f"What was the name of {n}'s sibling?"],
             [self.sibling]),
            (f"{n} had {self.eyes} eyes.", [f"What colour were {n}'s eyes?"], [self.eyes]),
        ]


@dataclass
class Town:
    name: str
    country: str
    river: str
    founded: int
    known_for: str
    product: str

    def facts(self):
        n = self.name
        return [
            (f"{n} is a town in the country of {self.country}.", [f"In which country is {n}?"], [self.country]),
            (f"The river {self.river} flows through {n}.", [f"Which river flows through {n}?"], [self.river]),
            (f"{n} was founded in {self.founded}.", [f"When was {n} founded?", f"In what year was {n} founded?"],
             [str(self.founded)]),
            (f"{n} is known for {self.known_for}.", [f"What is {n} known for?"], [self.known_for]),
            (f"The workshops of {n} make {self.product}.", [f"What do the workshops of {n} make?"],
             [self.product]),
        ]


@dataclass
class World:
    """Entities of one split, generated from a seed. `World(seed, split)` is deterministic."""
    seed: int = 0
    split: str = "train"
    n_people: int = 2000
    n_towns: int = 300
    people: list = field(default_factory=list)
    towns: list = field(default_factory=list)

    def __post_init__(self):
        r = random.Random(f"world-{self.seed}")
        seen: set[str] = set()

        def fresh(make):
            while True:
                name = make()
                if name not in seen:
                    seen.add(name)
                    return name

        # Names are drawn for both splits from one stream and kept by hash, so the splits are disjoint.
        def want(name):
            return split_of(name) == self.split

        countries = [invented_word(r, 2) + r.choice(["ia", "land", "or", ""]) for _ in range(30)]
        while len(self.towns) < self.n_towns:
            name = fresh(lambda: invented_word(r, r.choice([1, 2])) + r.choice(TOWN_SUFFIX))
            t = Town(name, r.choice(countries), invented_word(r, 2), r.randint(900, 1900), r.choice(KNOWN_FOR),
                     r.choice(PRODUCTS))
            if want(name):
                self.towns.append(t)
        while len(self.people) < self.n_people:
            name = fresh(lambda: f"{invented_word(r, 2)} {invented_word(r, r.choice([2, 3]))}")
            town = r.choice(self.towns).name
            company = f"{invented_word(r, 2)} {r.choice(COMPANY_SUFFIX)}"
            p = Person(name, r.choice(["he", "she"]), town, r.randint(1700, 1999), r.choice(JOBS),
                       r.choice(ANIMALS), invented_word(r, 2), r.choice(FOODS), r.choice(INSTRUMENTS), company,
                       invented_word(r, 2), r.choice(COLORS))
            if want(name):
                self.people.append(p)


def paragraph(entity, r: random.Random, k: int | None = None, prefix: str = ""):
    """A paragraph of k shuffled facts about one entity; returns (text, [(question, answer), ...])."""
    facts = entity.facts()
    k = k or r.randint(3, min(6, len(facts)))
    chosen = r.sample(facts, k)
    name = entity.name
    chosen.sort(key=lambda f: not f[0].startswith(name))   # open with the name, never with a bare pronoun
    text = prefix + " ".join(s for s, _, _ in chosen)
    qas = [(r.choice(qs), a[0]) for _, qs, a in chosen]
    return text, qas


def qa_block(qas, r: random.Random) -> str:
    return "\n".join(f"Question: {q} Answer: {a}" for q, a in qas)
