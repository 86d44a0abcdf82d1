"""A broad training distribution for a "generalist" MemoryLLM: many fact forms, write lengths, distances, prompts.

The default checkpoint was trained on one template family (`world.paragraph`, 64-128-token writes, at most 5
contexts back) and recalls facts only in that form. `GeneralistSamples` draws every sample at run time from
(seed, index, k), so nothing is committed in bulk and a resumed run sees the same data:

* facts about invented people, companies, towns and events (Faker, seeded per sample), each relation with several
  statement forms and several question wordings, rendered as prose, news items, dialogue, lists, tables-as-text,
  JSON-like records, letters and one-sentence edits ("X's employer is now Y.");
* writes of `min_write`..`max_write` tokens (log-uniform): a fact passage alone, or sunk at a random depth among
  distractor passages (generic prose and facts about other entities);
* k contexts (the trainer's curriculum; up to 20) with questions about facts in any of them, the earliest one
  favoured (`p_first`) so recall many writes back is what the loss rewards; some contexts are pure distractors;
* edits: an earlier context states the old value, a later short write the new one; the question wants the new;
* long documents (facts interleaved with prose) cut at sentence ends into ~`doc_chunk`-token chunks, the paper's
  chunks-into-K ratio (512 into K=256 there; 128 into K=64 here), with questions about any earlier chunk;
* plain continuation of generic text (the paper's objective on raw corpora);
* targets in two prompt styles: "Question: .. Answer: .." lines and SmolLM2's chat template, answers short or as
  a sentence.

Entities: person/company/town names are kept only if `world.split_of(name)` is the requested split ("train" for
training), and no generated string may contain a name of any evaluation set (`eval_entity_strings`: the
hand-written natural facts, the bundled retention set's world, the editing sets' subjects); generic documents
naming one of them are dropped. Faker's output depends on its version: pin it for bit-identical resumes.
"""
from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache

from faker import Faker
from num2words import num2words

from ..paths import EDITING_DIR
from .corpus import GENERIC_HOLDOUT, DefaultSamples, chunk_document, generic_texts
from .world import COMPANY_SUFFIX, TOWN_SUFFIX, World, invented_word, split_of

# ---------------------------------------------------------------------------------------------- name hygiene
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’\-.][A-Za-z0-9]+)*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


@lru_cache(maxsize=1)
def eval_entity_strings() -> frozenset[str]:
    """Every entity name of an evaluation set, as word tuples joined by spaces (case-sensitive, a leading "the"
    dropped): hand-written natural facts, the bundled retention world (held-out split: names and the invented
    names among its attributes), and the subjects of the bundled editing sets."""
    from .natural_facts import load_natural_facts
    names: set[str] = set()
    for r in load_natural_facts("all"):
        names.update(r["entities"])
    w = World(seed=0, split="heldout")
    for p in w.people:
        names.update([p.name, p.town, p.pet, p.company, p.sibling])
    for t in w.towns:     # (not its country: world.py's 30 invented countries are shared by both splits)
        names.update([t.name, t.river])
    for rec in json.loads((EDITING_DIR / "counterfact_bundled.json").read_text()):
        names.add(rec["requested_rewrite"]["subject"])
    for rec in json.loads((EDITING_DIR / "zsre_bundled.json").read_text()):
        names.add(rec["subject"])
    out = set()
    for n in names:
        ws = _words(n)
        if ws and ws[0].lower() == "the":
            ws = ws[1:]
        if ws:
            out.add(" ".join(ws))
    return frozenset(out)


@lru_cache(maxsize=1)
def _banned_index():
    banned = eval_entity_strings()
    return banned, max(len(b.split()) for b in banned)


def banned_in(text: str) -> list[str]:
    """The evaluation-set names that occur in `text` as whole words (case-sensitive)."""
    banned, longest = _banned_index()
    ws = _words(text)
    hits = []
    for n in range(1, longest + 1):
        for i in range(len(ws) - n + 1):
            s = " ".join(ws[i:i + n])
            if s in banned:
                hits.append(s)
    return hits


# ---------------------------------------------------------------------------------------------- relations
@dataclass
class Rel:
    key: str
    label: str                  # "X's {label} is now ..." (edits, lists, tables); may use the make's extra keys
    make: object                # (fake, rng, entity) -> (value, extra placeholders)
    says: list                  # statement forms: {S} subject, {v} value, {pos} possessive, extra keys
    asks: list                  # question forms: {n} full name, extra keys


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _job(fake, rng):
    j = fake.job()
    if "," in j:                 # "Therapist, drama" -> "drama therapist"
        head, _, tail = j.partition(",")
        j = f"{tail.strip()} {head.strip()}"
    j = re.sub(r"\s*\(.*?\)", "", j).lower()
    return j


ANIMALS = ["dog", "cat", "parrot", "horse", "goat", "rabbit", "tortoise", "hamster", "canary", "pony", "ferret",
           "lizard", "duck", "pig"]
HOBBIES = ["rock climbing", "bird watching", "knitting", "chess", "sailing", "pottery", "gardening", "fencing",
           "archery", "baking bread", "restoring old radios", "beekeeping", "salsa dancing", "fly fishing",
           "origami", "stargazing", "rowing", "woodcarving", "cave diving", "collecting stamps", "juggling"]
PRODUCTS = ["garden hoses", "solar panels", "bicycle helmets", "frozen dumplings", "hearing aids", "ski boots",
            "office chairs", "dog food", "wind turbines", "electric kettles", "board games", "hiking tents",
            "water filters", "paint brushes", "tractor tyres", "canned tomatoes", "guitar strings", "sunscreen",
            "door locks", "yoga mats", "drones", "fire alarms", "chocolate bars", "umbrellas"]
KNOWN_FOR = ["its night market", "a leaning water tower", "a cheese festival", "its copper mines",
             "a rowing regatta", "the largest library in the county", "its pink granite quarry",
             "an annual kite race", "a hundred-year-old carousel", "its oyster beds", "a glass museum",
             "a jazz festival", "its cherry orchards", "a ruined castle", "a tram line to the sea"]
EVENT_KINDS = ["Book Fair", "Jazz Festival", "Marathon", "Chess Open", "Film Festival", "Science Fair",
               "Flower Show", "Food Market", "Robotics Cup", "Poetry Night"]
VENUE_KINDS = ["Hall", "Park", "Arena", "Pavilion", "Community Centre", "Stadium"]
SIBS = ["brother", "sister"]
OWNED = ["bicycles", "goats", "clocks", "guitars", "umbrellas", "sailing boats", "teapots", "apple trees",
         "chickens", "kites", "lamps", "canoes", "sheep", "old radios", "cactuses", "motorbikes", "rugs"]
TOWN_THINGS = ["bridges", "schools", "churches", "bakeries", "lighthouses", "fountains", "cinemas", "windmills"]


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def _date(rng, lo: int, hi: int) -> str:
    """A date in years lo..hi. Not Faker's date_between: that is relative to today, so not reproducible."""
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(lo, hi)}"


def _sibling(fake, rng, e):
    sib = rng.choice(SIBS)
    first = fake.first_name_male() if sib == "brother" else fake.first_name_female()
    return f"{first} {e['last']}", {"sib": sib}


def _year(rng, lo=1850, hi=2019):
    return str(rng.randint(lo, hi))


def _count(rng, lo, hi):
    return f"{rng.randint(lo, hi):,}"


def _num(rng, lo, hi):
    """A small number as digits or, half of the time, in words ("forty-two"): English prose spells out small
    numbers, and a reader trained on digits alone answers "42" to a text that said "forty-two"."""
    n = rng.randint(lo, hi)
    return num2words(n) if rng.random() < 0.5 else str(n)


PERSON = [
    Rel("city", "home town", lambda f, r, e: (f.city(), {}),
        ["{S} lives in {v}.", "These days {S} calls {v} home.", "{S} moved to {v} after finishing school.",
         "Home for {S} is {v}.", "{S} rents a small flat in {v}."],
        ["Where does {n} live?", "In which town does {n} live?", "What town does {n} call home?",
         "Where is {n} living these days?"]),
    Rel("born", "birthplace", lambda f, r, e: (f.city(), {}),
        ["{S} was born in {v}.", "{S} grew up in {v}.", "{S} is originally from {v}.",
         "{S} spent {pos} childhood in {v}."],
        ["Where was {n} born?", "Where is {n} originally from?", "In which town did {n} grow up?",
         "What is {n}'s birthplace?"]),
    Rel("birthday", "date of birth", lambda f, r, e: (_date(r, 1935, 2006), {}),
        ["{S} was born on {v}.", "{S}'s date of birth is {v}.", "{S} came into the world on {v}."],
        ["When was {n} born?", "What is {n}'s date of birth?", "On what date was {n} born?"]),
    Rel("job", "job", lambda f, r, e: (_job(f, r), {}),
        ["{S} works as {av}.", "{S} is {av} by profession.", "By trade, {S} is {av}.",
         "{S} earns a living as {av}.", "For years {S} has worked as {av}."],
        ["What does {n} do for a living?", "What is {n}'s job?", "What is the profession of {n}?",
         "What does {n} work as?"]),
    Rel("employer", "employer", lambda f, r, e: (f.company(), {}),
        ["{S} works for {v}.", "{S} is employed by {v}.", "{S} joined {v} a few years ago.",
         "{S} has a job at {v}."],
        ["Who does {n} work for?", "Which company employs {n}?", "What is the name of {n}'s employer?",
         "Where does {n} work?"]),
    Rel("pet", "pet", lambda f, r, e: (f.first_name(), {"animal": r.choice(ANIMALS)}),
        ["{S} has {aanimal} named {v}.", "{S}'s {animal} is called {v}.", "{S} owns {aanimal}, {v}.",
         "{S} looks after {aanimal} called {v}."],
        ["What is the name of {n}'s {animal}?", "What is {n}'s {animal} called?", "What did {n} name the {animal}?"]),
    Rel("color", "favourite colour", lambda f, r, e: (f.safe_color_name(), {}),
        ["{S}'s favourite colour is {v}.", "{S} likes the colour {v} more than any other.",
         "If you ask {S}, the best colour is {v}."],
        ["What is {n}'s favourite colour?", "Which colour does {n} like best?", "What colour does {n} prefer?"]),
    Rel("language", "home language", lambda f, r, e: (f.language_name(), {}),
        ["{S} speaks {v} at home.", "At home, {S} speaks {v}.", "The language {S} uses at home is {v}."],
        ["What language does {n} speak at home?", "Which language is spoken at home by {n}?"]),
    Rel("phone", "phone number", lambda f, r, e: (f.numerify("###-####"), {}),
        ["{S}'s phone number is {v}.", "{S} can be reached at {v}.", "You can call {S} on {v}."],
        ["What is {n}'s phone number?", "At what number can {n} be reached?", "What number should I call to reach {n}?"]),
    Rel("address", "address", lambda f, r, e: (f.street_address(), {}),
        ["{S}'s address is {v}.", "{S}'s house is at {v}.", "Letters for {S} go to {v}."],
        ["What is {n}'s address?", "Where is {n}'s house?", "To which address should letters for {n} be sent?"]),
    Rel("sibling", "sibling", lambda f, r, e: _sibling(f, r, e),
        ["{S} has a {sib} named {v}.", "{S}'s {sib} is {v}.", "{v} is {S}'s {sib}."],
        ["What is the name of {n}'s {sib}?", "Who is {n}'s {sib}?"]),
    Rel("age", "age", lambda f, r, e: (_num(r, 19, 88), {}),
        ["{S} is {v} years old.", "{S} turned {v} this year.", "At {v}, {S} is the oldest in the team."],
        ["How old is {n}?", "What is {n}'s age?", "What age is {n}?"]),
    Rel("hobby", "hobby", lambda f, r, e: (r.choice(HOBBIES), {}),
        ["In {pos} free time, {S} enjoys {v}.", "{S}'s hobby is {v}.", "On weekends {S} is busy with {v}."],
        ["What is {n}'s hobby?", "What does {n} do in {pos} free time?", "How does {n} spend weekends?"]),
    Rel("plate", "licence plate", lambda f, r, e: (f.license_plate(), {}),
        ["The licence plate on {S}'s car reads {v}.", "{S} drives a car with the plate {v}."],
        ["What is the licence plate of {n}'s car?", "What plate is on {n}'s car?"]),
    Rel("owned", "number of {things}", lambda f, r, e: (_num(r, 2, 99), {"things": r.choice(OWNED)}),
        ["{S} owns {v} {things}.", "{S} has {v} {things} at home.", "There are {v} {things} in {S}'s collection."],
        ["How many {things} does {n} own?", "How many {things} does {n} have?"]),
    Rel("spouse", "spouse", lambda f, r, e: (f.name(), {}),
        ["{S} is married to {v}.", "{S}'s spouse is {v}.", "{S} married {v} years ago."],
        ["Who is {n} married to?", "What is the name of {n}'s spouse?", "Whom did {n} marry?"]),
]
COMPANY = [
    Rel("hq", "headquarters", lambda f, r, e: (f.city(), {}),
        ["{S} is headquartered in {v}.", "{S} has its head office in {v}.", "{S} is based in {v}."],
        ["Where is {n} headquartered?", "In which city is {n} based?", "Where is the head office of {n}?"]),
    Rel("founded", "founding year", lambda f, r, e: (_year(r, 1890, 2020), {}),
        ["{S} was founded in {v}.", "{S} has been in business since {v}.", "{S} opened its doors in {v}."],
        ["When was {n} founded?", "In what year was {n} founded?", "Since when has {n} been in business?"]),
    Rel("ceo", "chief executive", lambda f, r, e: (f.name(), {}),
        ["The chief executive of {S} is {v}.", "{v} runs {S}.", "{S} is led by {v}."],
        ["Who is the CEO of {n}?", "Who runs {n}?", "Who leads {n}?"]),
    Rel("product", "main product", lambda f, r, e: (r.choice(PRODUCTS), {}),
        ["{S} makes {v}.", "{S} is best known for its {v}.", "Most of what {S} sells is {v}."],
        ["What does {n} make?", "What product is {n} known for?", "What does {n} sell?"]),
    Rel("staff", "number of employees", lambda f, r, e: (_count(r, 12, 95000), {}),
        ["{S} employs {v} people.", "{S} has a staff of {v}.", "There are {v} people on the payroll of {S}."],
        ["How many people does {n} employ?", "How many employees does {n} have?", "How large is the staff of {n}?"]),
    Rel("ticker", "ticker symbol", lambda f, r, e: (f.lexify("????").upper(), {}),
        ["{S} trades under the ticker {v}.", "Shares of {S} are listed as {v}."],
        ["What is the ticker symbol of {n}?", "Under which ticker does {n} trade?"]),
]
TOWN = [
    Rel("country", "country", lambda f, r, e: (f.country(), {}),
        ["{S} lies in {v}.", "{S} is a town in {v}.", "{S} can be found in {v}."],
        ["In which country is {n}?", "Which country is {n} in?", "In what country does {n} lie?"]),
    Rel("population", "population", lambda f, r, e: (_count(r, 800, 900000), {}),
        ["{S} has a population of {v}.", "About {v} people live in {S}.", "{S} is home to {v} residents."],
        ["What is the population of {n}?", "How many people live in {n}?", "How many residents does {n} have?"]),
    Rel("tcount", "number of {things}", lambda f, r, e: (_num(r, 2, 60), {"things": r.choice(TOWN_THINGS)}),
        ["{S} has {v} {things}.", "There are {v} {things} in {S}.", "Visitors to {S} can count {v} {things}."],
        ["How many {things} does {n} have?", "How many {things} are there in {n}?"]),
    Rel("mayor", "mayor", lambda f, r, e: (f.name(), {}),
        ["The mayor of {S} is {v}.", "{v} is the mayor of {S}.", "{S} elected {v} as mayor."],
        ["Who is the mayor of {n}?", "Who was elected mayor of {n}?"]),
    Rel("river", "river", lambda f, r, e: (f"{f.last_name()} River", {}),
        ["The {v} runs through {S}.", "{S} sits on the banks of the {v}."],
        ["Which river runs through {n}?", "On which river does {n} sit?"]),
    Rel("tfounded", "founding year", lambda f, r, e: (_year(r, 1100, 1950), {}),
        ["{S} was founded in {v}.", "{S} dates back to {v}.", "The first houses of {S} were built in {v}."],
        ["When was {n} founded?", "In what year was {n} founded?", "How far back does {n} date?"]),
    Rel("known", "claim to fame", lambda f, r, e: (r.choice(KNOWN_FOR), {}),
        ["{S} is famous for {v}.", "{S} is known for {v}.", "Visitors come to {S} for {v}."],
        ["What is {n} famous for?", "What is {n} known for?", "Why do visitors come to {n}?"]),
    Rel("postcode", "postal code", lambda f, r, e: (f.postcode(), {}),
        ["The postal code of {S} is {v}.", "Mail to {S} uses the postcode {v}."],
        ["What is the postal code of {n}?", "Which postcode does {n} use?"]),
]
EVENT = [
    Rel("date", "date", lambda f, r, e: (_date(r, 2019, 2030), {}),
        ["{S} takes place on {v}.", "{S} is scheduled for {v}.", "{S} will be held on {v}."],
        ["When does {n} take place?", "On what date is {n}?", "What is the date of {n}?"]),
    Rel("venue", "venue", lambda f, r, e: (f"{f.last_name()} {r.choice(VENUE_KINDS)}", {}),
        ["{S} is held at {v}.", "The venue for {S} is {v}.", "{S} takes over {v} every year."],
        ["Where is {n} held?", "What is the venue of {n}?", "Which venue hosts {n}?"]),
    Rel("organiser", "organiser", lambda f, r, e: (f.company(), {}),
        ["{S} is organised by {v}.", "{v} organises {S}.", "The organiser of {S} is {v}."],
        ["Who organises {n}?", "Which company organises {n}?", "Who is the organiser of {n}?"]),
    Rel("winner", "last winner", lambda f, r, e: (f.name(), {}),
        ["Last year {S} was won by {v}.", "{v} won {S} last year.", "The most recent winner of {S} is {v}."],
        ["Who won {n} last year?", "Who is the most recent winner of {n}?"]),
    Rel("days", "length in days", lambda f, r, e: (_num(r, 2, 14), {}),
        ["{S} lasts {v} days.", "{S} runs for {v} days.", "For {v} days, {S} fills the town."],
        ["How many days does {n} last?", "For how many days does {n} run?"]),
    Rel("price", "ticket price", lambda f, r, e: (f"${r.randint(3, 180)}", {}),
        ["Tickets for {S} cost {v}.", "Entry to {S} is {v}.", "A ticket to {S} costs {v}."],
        ["How much do tickets for {n} cost?", "What does entry to {n} cost?", "What is the ticket price of {n}?"]),
]
KINDS = {"person": PERSON, "company": COMPANY, "town": TOWN, "event": EVENT}
GENERIC_QUESTIONS = ["What is {n}'s {label}?", "Tell me the {label} of {n}.", "Do you know the {label} of {n}?"]


@dataclass
class Fact:
    subject: str               # full name, as questions use it
    rel: Rel
    value: str
    extra: dict
    sentence: str = ""         # the rendered statement (set when written)

    @property
    def label(self) -> str:           # "number of {things}" -> "number of goats"
        return self.rel.label.format(**self.extra) if "{" in self.rel.label else self.rel.label

    def question(self, rng) -> str:
        forms = self.rel.asks + [g.replace("{label}", self.label) for g in GENERIC_QUESTIONS[:1]]
        return _fill(rng.choice(forms), n=self.subject, pos="their", **self.extra)


# template words that may open a sentence: lower-cased when a sentence is embedded ("Sources say the ...")
_STARTS = {t.split()[0] for rels in KINDS.values() for r in rels for t in r.says if not t.startswith("{")}
_STARTS |= {"She", "He"}


def _lower_start(sentence: str) -> str:
    w = sentence.split()[0]
    return sentence[0].lower() + sentence[1:] if w in _STARTS else sentence


def _fill(template: str, **kw) -> str:
    out = template.format(**kw)
    return out[0].upper() + out[1:] if out else out


# ---------------------------------------------------------------------------------------------- the sampler
@dataclass
class GeneralistMix:
    """Sample-kind weights and shapes. Why these defaults: the probe table of the first default checkpoint
    (`python -m memoryllm_repro.eval.probes --preset full --n 20`) showed every cause at work: its own template
    form 1.00 vs natural sentences 0.60 (form); 0.55 at 64 tokens, 0.25 at 128, 0.00 at 256 and 512 (length);
    0.00 at the start or middle of a 512-token write, 0.55 at its end (position); 0.55 one write later, 0.10 after
    5, 0.05 after 10, 0.00 after 20 (distance); 0.60 with "Question: .. Answer:", 0.10 with the chat template
    (prompt). So no single kind dominates: most samples are facts in many forms, at any depth of writes of
    16-512 tokens, asked in both prompt styles, often about the earliest of k contexts; edits train the short
    end, documents the long chunked end, generic text keeps plain language modelling."""
    facts: float = 0.55          # k contexts, facts in any of them, questions esp. about the earliest
    edit: float = 0.15           # old value early, short "is now" write later, asked for the new value
    document: float = 0.15       # a long document cut into ~doc_chunk-token chunks, questions about earlier ones
    generic: float = 0.15        # plain continuation of generic text
    world: float = 0.0           # rehearsal of the first default checkpoint's own format (corpus.DefaultSamples:
                                 # world.py paragraphs of the train split, a block of "Question: .. Answer: .."
                                 # lines), so a run started from it keeps what it could do
    p_chat: float = 0.4          # target in the chat template (else "Question: .. Answer: ..")
    p_sentence_answer: float = 0.25   # the answer as a full sentence instead of the bare value
    p_first: float = 0.5         # one question is about the earliest fact context
    p_distractor: float = 0.35   # a later context is natural prose with nothing asked
    min_write: int = 16          # tokens (the model's min_context_tokens; the authors' minimum)
    max_write: int = 512
    doc_chunk: int = 128         # document chunk length: the paper's 512-into-K=256, scaled to K=64
    kl_tokens: int = 0           # distillation text: 0 = a random 64-128-token piece of a generic document; N = the
                                 # document's first N tokens, so positions past 128 are held to the backbone too
    p_invented: float = 0.0      # share of samples whose names (people, pets, towns, companies) are invented
                                 # syllables (world.py's style, train split) instead of Faker's real-world names: a
                                 # user's text names unfamiliar things ("Varnholm"), and copying a rare spelling
                                 # out of memory is its own skill (see InventedNames)


class InventedNames:
    """A Faker stand-in whose name methods return invented words ("Troumel Vaskerin", "Drelford") and which passes
    every other call to Faker. Why: Faker's names are common real ones whose spelling the backbone already knows;
    the generalist candidates trained on them alone misspelled invented names they read back from memory (the
    misses of Figure 5's update 1 at steps 3500 and 4250: "Keshlerkady", "Zeindabyon")."""

    def __init__(self, fake, rng: random.Random):
        self._f, self._r = fake, rng

    def __getattr__(self, name):
        return getattr(self._f, name)

    def first_name(self) -> str:
        return invented_word(self._r, self._r.choice([1, 2, 2]))

    first_name_male = first_name_female = first_name

    def last_name(self) -> str:
        return invented_word(self._r, self._r.choice([2, 2, 3]))

    def name(self) -> str:
        return f"{self.first_name()} {self.last_name()}"

    def city(self) -> str:
        return invented_word(self._r, self._r.choice([1, 2])) + self._r.choice(TOWN_SUFFIX)

    def company(self) -> str:
        return f"{invented_word(self._r, 2)} {self._r.choice(COMPANY_SUFFIX)}"


class GeneralistSamples:
    """Training samples: sample(index, k) -> {"contexts": [ids]*k, "target": ids, "kind", "answers"} (answers: the
    values the target asks for, each in one of the contexts; question targets also carry "answer_mask", 1 on
    the answer tokens); a pure function of (seed, index, k). `split="heldout"` draws the held-out names instead
    (generator-format evaluation only)."""

    def __init__(self, tokenizer, seed: int = 0, mix: GeneralistMix | dict | None = None, split: str = "train",
                 texts: list[str] | None = None, generic_holdout: int = GENERIC_HOLDOUT):
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        self.tok, self.seed, self.split = tokenizer, seed, split
        self.mix = GeneralistMix(**mix) if isinstance(mix, dict) else (mix or GeneralistMix())
        m = self.mix
        if not 16 <= m.min_write <= m.max_write:
            raise ValueError(f"need 16 <= min_write <= max_write, got {m.min_write}, {m.max_write}")
        if not 0.0 <= m.p_invented <= 1.0:
            raise ValueError(f"p_invented must be in [0, 1], got {m.p_invented}")
        if m.kl_tokens != 0 and m.kl_tokens < 16:
            raise ValueError(f"kl_tokens must be 0 (random 64-128-token pieces) or >= 16, got {m.kl_tokens}")
        weights = [m.facts, m.edit, m.document, m.generic, m.world]
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {weights}")
        texts = generic_texts() if texts is None else texts
        self.generic_heldout = texts[-generic_holdout:] if generic_holdout else []
        train = texts[:-generic_holdout] if generic_holdout else texts
        # documents that name an evaluation entity (e.g. "Paris", a CounterFact subject) are never trained on
        self.generic = [t for t in train if not banned_in(t)]
        if not self.generic:
            raise ValueError("no generic text left for distractors and continuation")
        sents = [[s for s in re.split(r"(?<=[.!?])\s+", " ".join(t.split())) if len(s) > 2] for t in self.generic]
        self._sents = [s for s in sents if s]
        lens = self.tok([x for s in self._sents for x in s], add_special_tokens=False).input_ids
        it = iter(lens)
        self._slen = [[len(next(it)) for _ in s] for s in self._sents]
        self._faker = self._fake = Faker("en_US")
        self._default = None             # the rehearsal generator (mix.world), built on first use

    # ------------------------------------------------------------------ public API (same as DefaultSamples)
    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    def sample(self, index: int, k: int) -> dict:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        rng = random.Random(f"generalist-{self.seed}-{self.split}-{index}-{k}")
        m = self.mix
        # (a zero weight at the end changes no draw: runs without `world` get the samples they always got)
        kind = rng.choices(["facts", "edit", "document", "generic", "world"],
                           [m.facts, m.edit, m.document, m.generic, m.world])[0]
        for _ in range(20):
            self._faker.seed_instance(rng.getrandbits(64))
            # no draw at all when p_invented is 0, so samples of runs without it stay bit-identical
            invented = m.p_invented > 0 and rng.random() < m.p_invented
            self._fake = InventedNames(self._faker, random.Random(rng.getrandbits(64))) if invented else self._faker
            out = getattr(self, "_" + kind)(rng, k)
            if out is not None and not any(banned_in(self.tok.decode(c)) for c in out["contexts"] + [out["target"]]):
                return out
        raise RuntimeError(f"sample {index}: no clean sample of kind {kind} in 20 tries")

    def regularizer(self, index: int) -> list[int]:
        """A chunk of training generic text for the distillation term (TrainConfig.kl_weight)."""
        rng = random.Random(f"generalist-{self.seed}-kl-{index}")
        ids = self.encode(rng.choice(self.generic))
        if self.mix.kl_tokens:
            return ids[: self.mix.kl_tokens]
        return rng.choice(chunk_document(ids, 64, 128, rng) or [ids[:128]])

    # ------------------------------------------------------------------ entities and passages
    def _clean(self, make):
        for _ in range(50):
            v = make()
            if not banned_in(v):
                return v
        raise RuntimeError("could not draw a value free of evaluation names")

    def _name_ok(self, name: str) -> bool:
        return split_of(name) == self.split and not banned_in(name)

    def _entity(self, rng, kind: str | None = None) -> dict:
        f = self._fake
        kind = kind or rng.choices(list(KINDS), [0.55, 0.2, 0.15, 0.1])[0]
        for _ in range(200):
            if kind == "person":
                sex = rng.choice("fm")
                first = f.first_name_female() if sex == "f" else f.first_name_male()
                last = f.last_name()
                e = {"kind": kind, "name": f"{first} {last}", "first": first, "last": last,
                     "pron": "she" if sex == "f" else "he", "pos": "her" if sex == "f" else "his"}
            elif kind == "company":
                e = {"kind": kind, "name": f.company()}
            elif kind == "town":
                e = {"kind": kind, "name": f.city()}
            else:
                e = {"kind": kind, "name": f"the {f.city()} {rng.choice(EVENT_KINDS)}"}
            if self._name_ok(e["name"]):
                return e
        raise RuntimeError(f"no {kind} name of split {self.split!r} found")

    def _facts_of(self, rng, e, n: int) -> list[Fact]:
        rels = rng.sample(KINDS[e["kind"]], min(n, len(KINDS[e["kind"]])))
        out = []
        for rel in rels:
            value, extra = None, {}
            for _ in range(50):
                value, extra = rel.make(self._fake, rng, e)
                if not banned_in(value):
                    break
            else:
                raise RuntimeError("could not draw a value free of evaluation names")
            out.append(Fact(e["name"], rel, value, extra))
        return out

    def _say(self, rng, e, fact: Fact, ref: str) -> str:
        pos = e.get("pos", "its")
        ex = dict(fact.extra)
        if "animal" in ex:
            ex["aanimal"] = _a(ex["animal"])
        s = _fill(rng.choice(fact.rel.says), S=ref, v=fact.value, av=_a(fact.value), pos=pos, **ex)
        fact.sentence = s
        return s

    def _refs(self, rng, e, i: int) -> str:
        """How sentence i of a passage names its subject: the full name first, then a mix of short forms."""
        if i == 0 or rng.random() < 0.4:
            return e["name"]
        if e["kind"] == "person":
            return rng.choice([e["first"], e["last"] if rng.random() < 0.3 else e["first"], e["pron"]])
        return e["name"]

    def _passage(self, rng, e, facts: list[Fact]) -> str:
        """One entity's facts in one of several forms."""
        form = rng.choices(["prose", "news", "dialogue", "list", "record", "letter"], [4, 2, 1.5, 1.5, 1, 1])[0]
        name = e["name"]
        if form == "list":
            head = rng.choice(["{n}\n", "Profile: {n}\n", "Name: {n}\n", "About {n}:\n"]).format(n=name)
            for f in facts:
                f.sentence = f"{f.label[0].upper()}{f.label[1:]}: {f.value}"
            bullet = rng.choice(["- ", "* ", ""])
            return head + "\n".join(bullet + f.sentence for f in facts)
        if form == "record":
            for f in facts:
                f.sentence = f"\"{f.label}\": \"{f.value}\""
            return "{\"name\": \"" + name + "\", " + ", ".join(f.sentence for f in facts) + "}"
        sents = []
        for i, f in enumerate(facts):
            ref = self._refs(rng, e, i)
            if ref == e.get("pron"):
                s = self._say(rng, e, f, "{S}")
                s = s.replace("{S}'s", e["pos"]).replace("{S}", e["pron"])
                s = s[0].upper() + s[1:]
                f.sentence = s
            else:
                s = self._say(rng, e, f, ref)
            sents.append(s)
        if form == "prose":
            return " ".join(sents)
        if form == "news":
            place, date = self._fake.city(), _date(rng, 2015, 2024)
            lead = rng.choice(["{p}, {d} - ", "{P} ({d}) -- ", "From our correspondent in {p}: ", ""]).format(
                p=place, P=place.upper(), d=date)
            wrap = ["According to local records, ", "A spokesperson confirmed that ", "Sources say ", "", "", ""]
            body = [w + _lower_start(x) if w else x for w, x in ((rng.choice(wrap), x) for x in sents)]
            return lead + " ".join(body)
        if form == "dialogue":
            a, b = self._fake.first_name(), self._fake.first_name()
            lines = [f"{a}: " + rng.choice([f"What do you know about {name}?", f"Have you met {name}?",
                                             f"Tell me about {name}."])]
            for i, s in enumerate(sents):
                lines.append(f"{b if i % 2 == 0 else a}: " + (lambda w: w + _lower_start(s) if w else s)(
                    rng.choice(["", "Well, ", "Oh, ", "I heard that "])))
            return "\n".join(lines)
        # letter
        to, frm = self._fake.first_name(), self._fake.first_name()
        return (f"Dear {to},\n\n" + rng.choice(["I wanted to tell you some news. ", "Quick update. ", ""]) +
                " ".join(sents) + f"\n\n{rng.choice(['Best', 'Love', 'Yours', 'Cheers'])},\n{frm}")

    def _table(self, rng, kind: str, n_rows: int) -> tuple[str, list[Fact]]:
        """Several entities of one kind as a text table; every cell is an askable fact."""
        fixed = [r for r in KINDS[kind] if "{" not in r.label]       # one header per column
        rels = rng.sample(fixed, rng.randint(2, min(4, len(fixed))))
        rows, facts, seen = [], [], set()
        for _ in range(n_rows):
            e = self._entity(rng, kind)
            if e["name"] in seen:
                continue
            seen.add(e["name"])
            fs = []
            for rel in rels:
                for _ in range(50):
                    v, extra = rel.make(self._fake, rng, e)
                    if not banned_in(v):
                        break
                # a table has no room for "animal"/"sib": ask with the generic label only
                f = Fact(e["name"], Rel(rel.key, rel.label, rel.make, rel.says, [q for q in rel.asks if "{animal}"
                                                                                      not in q and "{sib}" not in q]
                                        or ["What is the {label} of {n}?".replace("{label}", rel.label)]),
                         v, extra)
                fs.append(f)
            facts += fs
            rows.append([e["name"]] + [f.value for f in fs])
        header = ["name"] + [r.label for r in rels]
        if rng.random() < 0.5:
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            lines = [", ".join(header)] + [", ".join(r) for r in rows]
        for f in facts:
            f.sentence = f"{f.subject}: {f.rel.label} {f.value}"
        return "\n".join(lines), facts

    def _fact_write(self, rng, target_len: int) -> tuple[str, list[Fact]]:
        """A write of about target_len tokens: one or more fact passages at a random depth among prose."""
        if rng.random() < 0.12:
            text, facts = self._table(rng, rng.choice(list(KINDS)), rng.randint(2, 5))
        else:
            e = self._entity(rng)
            facts = self._facts_of(rng, e, rng.randint(1, 5) if target_len > 48 else rng.randint(1, 2))
            text = self._passage(rng, e, facts)
        core = len(self.encode(text))
        # more passages about other entities (askable too) and generic prose around them
        parts = [text]
        budget = target_len - core
        while budget > 60 and rng.random() < 0.35:
            e2 = self._entity(rng)
            f2 = self._facts_of(rng, e2, rng.randint(1, 4))
            t2 = self._passage(rng, e2, f2)
            n2 = len(self.encode(t2))
            if n2 > budget:
                break
            parts.insert(rng.randint(0, len(parts)), t2)
            facts += f2
            budget -= n2
        if budget > 8:
            before = rng.randint(0, budget)
            pre, post = self._prose(rng, before), self._prose(rng, budget - before)
            parts = ([pre] if pre else []) + parts + ([post] if post else [])
        sep = rng.choice(["\n\n", "\n", " "])
        return sep.join(parts), facts

    def _prose(self, rng, n_tokens: int) -> str:
        """A run of consecutive sentences of generic text, about n_tokens long (possibly spanning documents)."""
        out, n = [], 0
        while n < n_tokens - 4:
            d = rng.randrange(len(self._sents))
            i = rng.randrange(len(self._sents[d]))
            while i < len(self._sents[d]) and n < n_tokens - 4:
                if n + self._slen[d][i] > n_tokens + 8 and out:
                    return " ".join(out)
                out.append(self._sents[d][i])
                n += self._slen[d][i] + 1
                i += 1
        return " ".join(out)

    def _write_len(self, rng) -> int:
        m = self.mix
        return int(math.exp(rng.uniform(math.log(m.min_write), math.log(m.max_write))))

    def _fit(self, rng, text: str) -> list[int] | None:
        ids = self.encode(text)
        if len(ids) > self.mix.max_write:
            return None
        if len(ids) < self.mix.min_write:
            ids = self.encode(rng.choice(["Note: ", "Fact: ", "From the records: ", "Remember this. "]) + text)
        return ids if len(ids) >= self.mix.min_write else None

    # ------------------------------------------------------------------ targets
    def _target(self, rng, facts: list[Fact]) -> tuple[list[int], str, list[str], list[int] | None]:
        """Questions about `facts` in one prompt style; the answer is the value, or a sentence containing it.
        Returns (ids, style, the values asked for, answer mask: 1 on the tokens of each answer)."""
        qas = []
        for f in facts:
            q = f.question(rng)
            if rng.random() < self.mix.p_sentence_answer and f.sentence and f.value in f.sentence \
                    and f.sentence[-1] == "." and f.subject in f.sentence:
                a = f.sentence
            else:
                a = f.value
            qas.append((q, a))
        if rng.random() < self.mix.p_chat:
            msgs = []
            for q, a in qas:
                msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            text, style = self.tok.apply_chat_template(msgs, tokenize=False), "chat"
        else:
            form = rng.choices(["Question: {q} Answer: {a}", "Question: {q}\nAnswer: {a}", "Q: {q} A: {a}"],
                               [6, 2, 1])[0]
            text, style = "\n".join(form.format(q=q, a=a) for q, a in qas), "qa"
        ids, mask = self._answer_mask(text, qas)
        return ids, style, [f.value for f in facts], mask

    def _answer_mask(self, text: str, qas: list[tuple[str, str]]) -> tuple[list[int], list[int] | None]:
        """Token ids of `text` and 1/0 per token: 1 where the token overlaps an answer (each answer is found after
        its question, in order). TrainConfig.answer_weight uses it; the ids are exactly `encode(text)`. None (the
        sample then counts every token alike) when a chat template rewrote an answer or the tokenizer gives no
        character offsets (a slow tokenizer)."""
        spans, cursor = [], 0
        for q, a in qas:
            q_at = text.find(q, cursor)
            start = text.find(a, q_at + len(q)) if q_at >= 0 else -1
            if start < 0:
                return self.encode(text), None
            spans.append((start, start + len(a)))
            cursor = start + len(a)
        try:
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:
            return self.encode(text), None
        mask = [int(any(s < b and a < e for a, b in spans)) for s, e in enc.offset_mapping]
        return enc.input_ids, mask

    def _pick(self, rng, per_context: list[list[Fact]], n_q: int) -> list[Fact]:
        """n_q facts to ask, one from the earliest fact context with probability p_first."""
        # a (subject, relation) stated twice (a name Faker drew twice) would be ambiguous: never asked
        count: dict = {}
        for fs in per_context:
            for f in fs:
                count[(f.subject, f.rel.key)] = count.get((f.subject, f.rel.key), 0) + 1
        per_context = [[f for f in fs if count[(f.subject, f.rel.key)] == 1] for fs in per_context]
        ctxs = [i for i, fs in enumerate(per_context) if fs]
        if not ctxs:
            return []
        chosen = []
        if len(per_context) > 1 and rng.random() < self.mix.p_first:
            chosen.append(rng.choice(per_context[ctxs[0]]))
        pool = [f for fs in per_context for f in fs if f not in chosen]
        rng.shuffle(pool)
        return chosen + pool[:max(0, n_q - len(chosen))]

    # ------------------------------------------------------------------ sample kinds
    def _facts(self, rng, k):
        contexts, per_context = [], []
        for i in range(k):
            if i > 0 and rng.random() < self.mix.p_distractor:
                ids = self._fit(rng, self._prose(rng, self._write_len(rng)))
                fs = []
            else:
                text, fs = self._fact_write(rng, self._write_len(rng))
                ids = self._fit(rng, text)
            if ids is None:
                return None
            contexts.append(ids)
            per_context.append(fs)
        ask = self._pick(rng, per_context, rng.randint(1, 4))
        if not ask:
            return None
        target, style, answers, mask = self._target(rng, ask)
        return {"contexts": contexts, "target": target, "kind": f"facts-{style}", "answers": answers,
                "answer_mask": mask}

    def _edit(self, rng, k):
        """Old value, later a short write with the new value ("X's employer is now Y"); asked for the new one."""
        e = self._entity(rng)
        facts = self._facts_of(rng, e, rng.randint(2, 4))
        changed = facts[0]
        for _ in range(50):
            new = self._facts_of_rel(rng, e, changed.rel)
            new.extra = changed.extra     # same pet, same sibling: only the value changes
            if new.value != changed.value and changed.value not in new.value and new.value not in changed.value:
                break
        else:
            return None
        label, n = changed.label, e["name"]
        forms = [x[0].upper() + x[1:] for x in [f"{n}'s {label} is now {new.value}.", f"Update: {n}'s {label} has changed to {new.value}.",
                 f"Correction: the {label} of {n} is {new.value}, not {changed.value}.",
                 f"As of this week, {n}'s {label} is {new.value}.", f"New information: {n}'s {label} is {new.value}."]]
        if k == 1:
            if rng.random() < 0.5:      # the one-sentence edit alone (12-30 tokens)
                contexts, ask = [self._fit(rng, rng.choice(forms))], [new]
            else:
                text = self._passage(rng, e, facts) + rng.choice([" ", "\n"]) + rng.choice(forms)
                contexts, ask = [self._fit(rng, text)], [new] + rng.sample(facts[1:], rng.randint(0, 1))
        else:
            first = self._fit(rng, self._passage(rng, e, facts))
            j = rng.randint(1, k - 1)
            contexts = [first]
            for i in range(1, k):
                if i == j:
                    contexts.append(self._fit(rng, rng.choice(forms)))
                else:
                    contexts.append(self._fit(rng, self._prose(rng, self._write_len(rng))))
            ask = [new] + rng.sample(facts[1:], rng.randint(0, 1))
        if any(c is None for c in contexts):
            return None
        new.sentence = ""
        rng.shuffle(ask)
        target, style, answers, mask = self._target(rng, ask)
        return {"contexts": contexts, "target": target, "kind": f"edit-{style}", "answers": answers,
                "answer_mask": mask}

    def _facts_of_rel(self, rng, e, rel: Rel) -> Fact:
        for _ in range(50):
            v, extra = rel.make(self._fake, rng, e)
            if not banned_in(v):
                return Fact(e["name"], rel, v, extra)
        raise RuntimeError("could not draw a value free of evaluation names")

    def _document(self, rng, k):
        """A document of prose with fact passages, cut at sentence ends into ~doc_chunk-token chunks; the first k
        chunks are the contexts; questions about facts in any of them (or, 25%, the next chunk is the target)."""
        c = self.mix.doc_chunk
        lo, hi = max(self.mix.min_write, c * 3 // 4), c * 5 // 4
        pieces: list[tuple[str, list[Fact]]] = []   # sentences; fact passages are split into their sentences
        total, want = 0, (k + 1) * c
        while total < want:
            if rng.random() < 0.45:
                e = self._entity(rng)
                fs = self._facts_of(rng, e, rng.randint(1, 3))
                text = self._passage(rng, e, fs)
                pieces.append((text, fs))
            else:
                text = self._prose(rng, rng.randint(20, 80))
                pieces.append((text, []))
            total += len(self.encode(text)) + 1
        chunks, cur, cur_f, n = [], [], [], 0
        size = rng.randint(lo, hi)
        for text, fs in pieces:
            m = len(self.encode(text)) + 1
            if cur and n + m > size:
                chunks.append((" ".join(cur), cur_f))
                cur, cur_f, n, size = [], [], 0, rng.randint(lo, hi)
            cur.append(text)
            cur_f = cur_f + fs
            n += m
        if cur:
            chunks.append((" ".join(cur), cur_f))
        if len(chunks) < k + 1:
            return None
        contexts = [self._fit(rng, t) for t, _ in chunks[:k]]
        if any(x is None for x in contexts):
            return None
        per_context = [fs for _, fs in chunks[:k]]
        if not any(per_context) or rng.random() < 0.25:
            return {"contexts": contexts, "target": self.encode(chunks[k][0])[: self.mix.max_write],
                    "kind": "document-continue", "answers": []}
        ask = self._pick(rng, per_context, rng.randint(1, 4))
        if not ask:
            return None
        target, style, answers, mask = self._target(rng, ask)
        return {"contexts": contexts, "target": target, "kind": f"document-{style}", "answers": answers,
                "answer_mask": mask}

    def _generic(self, rng, k):
        """The paper's objective on raw text: k+1 consecutive chunks of generic prose, the last one the target."""
        sizes = [rng.randint(max(self.mix.min_write, 32), 160) for _ in range(k + 1)]
        ids = self.encode(self._prose(rng, sum(sizes) * 6 // 5 + 64))
        if len(ids) < sum(sizes):
            return None
        chunks, i = [], 0
        for n in sizes:
            chunks.append(ids[i:i + n])
            i += n
        return {"contexts": chunks[:-1], "target": chunks[-1], "kind": "generic", "answers": []}

    def _world(self, rng, k):
        """A sample of the first default checkpoint's training format (facts only), asked as it was."""
        if self._default is None:
            self._default = DefaultSamples(self.tok, self.seed, p_generic=0.0, texts=[])
        return {**self._default.sample(rng.getrandbits(48), k), "kind": "world-qa"}

    # ------------------------------------------------------------------ evaluation in the generator's own format
    def qa_examples(self, n: int, seed: int = 0) -> list[dict]:
        """n single-fact (context, question, answer) items in the generator's forms, drawn from this object's split
        (use split="heldout" for evaluation): the "templates" arm of the sentence-form probe."""
        rng = random.Random(f"generalist-qa-{self.seed}-{self.split}-{seed}")
        self._fake = self._faker
        out = []
        while len(out) < n:
            self._fake.seed_instance(rng.getrandbits(64))
            e = self._entity(rng)
            facts = self._facts_of(rng, e, rng.randint(2, 4))
            text = self._passage(rng, e, facts)
            f = rng.choice(facts)
            if f.value not in text or banned_in(text):
                continue
            out.append({"id": f"gen-{self.split}-{seed}-{len(out)}", "context": text, "question": f.question(rng),
                        "answer": f.value})
        return out


__all__ = ["GeneralistSamples", "GeneralistMix", "eval_entity_strings", "banned_in"]
