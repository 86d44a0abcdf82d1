"""LongBench scorer, truncation and chunking on hand-written cases."""
import json

import pytest

from memoryllm_repro.eval import longbench as lb


def test_normalization_and_f1():
    assert lb.normalize_answer("The  Eiffel-Tower, in PARIS!") == "eiffeltower in paris"
    assert lb.normalize_answer("an apple a day") == "apple day"
    assert lb.qa_f1("Paris", "paris.") == 1.0
    assert lb.qa_f1("the city of Paris", "Paris") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))  # P 1/3, R 1
    assert lb.qa_f1("London", "Paris") == 0.0
    assert lb.qa_f1("", "Paris") == 0.0
    # "a" is an article and is dropped: [b, b] vs [b, b, c] -> precision 1, recall 2/3, F1 0.8
    assert lb.qa_f1("a b b", "b b c") == pytest.approx(0.8)


def test_max_over_answers_and_first_line_rule():
    assert lb.example_score("hotpotqa", "Miller v. California", ["Miller", "Miller v. California"]) == 1.0
    long = "Paris\nThe question asks about the capital of France"
    assert lb.example_score("hotpotqa", long, ["Paris"]) < 0.5           # no first-line cut for the six tasks
    assert lb.example_score("hotpotqa", long, ["Paris"], cut_first_line=True) == 1.0
    assert lb.example_score("triviaqa", "\n\nParis\nmore", ["Paris"]) == 1.0   # LongBench cuts here
    assert lb.dataset_score([1.0, 0.5, 0.0]) == 50.0
    assert lb.dataset_score([1 / 3]) == 33.33


def test_truncation_sides():
    ids = list(range(10))
    assert lb.truncate(ids, 4, "left") == [6, 7, 8, 9]
    assert lb.truncate(ids, 4, "middle") == [0, 1, 8, 9]
    assert lb.truncate(ids, 5, "middle") == [0, 1, 7, 8, 9]
    assert lb.truncate(ids, 20, "middle") == ids
    with pytest.raises(ValueError):
        lb.truncate(ids, 4, "right")


def test_chunking_keeps_order_and_every_token():
    ids = list(range(1000))
    chunks, prompt = lb.split_for_memory(ids, chunk=256, max_gen=32)
    assert prompt == ids[-224:]                                            # last chunk is the prompt
    assert [len(c) for c in chunks] == [8, 256, 256, 256]                  # earliest is the remainder
    assert sum(chunks, []) + prompt == ids                                 # nothing lost, duplicated or reordered
    chunks, prompt = lb.split_for_memory(list(range(100)), chunk=256, max_gen=32)
    assert chunks == [] and prompt == list(range(100))


def test_prompts_and_local_jsonl(tmp_path):
    cfg = lb.config()
    assert set(lb.TASKS) <= set(cfg["prompts"]) and cfg["max_new_tokens"]["narrativeqa"] == 128
    ex = {"input": "Who?", "context": "Some passages.", "answers": ["Ann"], "length": 3, "dataset": "hotpotqa",
          "language": "en", "all_classes": None, "_id": "x1"}
    (tmp_path / "hotpotqa.jsonl").write_text(json.dumps(ex) + "\n")
    assert lb.load_longbench("hotpotqa", str(tmp_path)) == [ex]
    p = lb.build_prompt("hotpotqa", ex)
    assert p.startswith("Answer the question based on the given passages.") and p.endswith("Question: Who?\nAnswer:")
    assert "The following are given passages.\nSome passages.\n\n" in p


def test_bundled_long_context_set():
    from memoryllm_repro import load_tokenizer
    from memoryllm_repro.data.longqa import TEMPLATE, bundled_longqa
    from memoryllm_repro.data.world import World
    tok = load_tokenizer("smollm2-135m")
    train = {p.name for p in World(0, "train").people}
    for kind in TEMPLATE:
        for ex in bundled_longqa(tok, kind, 2, 1200, seed=3):
            assert set(ex) == {"input", "context", "answers", "length", "dataset", "language", "all_classes", "_id"}
            assert ex["answers"][0] in ex["context"]
            assert len(tok(ex["context"], add_special_tokens=False).input_ids) >= 1200
            assert not any(name in ex["context"] for name in train)
            assert lb.build_prompt(TEMPLATE[kind], ex).endswith(ex["input"] + "\nAnswer:")


def test_attention_state_is_counted_by_hand():
    from memoryllm_repro import MemoryLLM
    m = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)   # 2 layers, 2 kv heads of 16, fp32
    kv_row = 2 * 2 * 2 * 16 * 4                                                  # keys + values, per token
    assert lb.attention_state_mb(m, 100, with_pool=False) * 2 ** 20 == 100 * kv_row
    pool = 2 * 64 * 64 * 4                                                       # L x N x d fp32
    assert lb.attention_state_mb(m, 100, with_pool=True) * 2 ** 20 == 100 * kv_row + pool + 65 * kv_row


def test_backbone_prompt_in_chat_template_within_length(monkeypatch):
    """The chat template wraps the truncated prompt and its tokens count in the maximum length."""
    from memoryllm_repro import MemoryLLM, load_tokenizer
    tok = load_tokenizer("smollm2-135m")
    pre, post = lb.chat_wrap(tok)
    assert "<|im_start|>user" in tok.decode(pre) and tok.decode(post).endswith("<|im_start|>assistant\n")
    m = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    seen = []
    monkeypatch.setattr(lb, "_generate", lambda model, ids, max_gen, use_memory: seen.append(ids) or [])
    ex = {"context": "word " * 3000, "input": "What?", "answers": ["x"], "_id": "0"}
    for chat in (True, False):
        lb.predict_backbone(m, tok, ex, "hotpotqa", 1024, chat=chat)
    wrapped, bare = seen
    max_gen = lb.config()["max_new_tokens"]["hotpotqa"]
    assert len(wrapped) == len(bare) == 1024 - max_gen
    assert wrapped[:len(pre)] == pre and wrapped[-len(post):] == post and bare[:len(pre)] != pre


def test_evidence_location_follows_truncation_and_chunks():
    from memoryllm_repro import load_tokenizer
    tok = load_tokenizer("smollm2-135m")
    filler = "\n".join(f"Passage {i}:\nTown {i}\n" + "words of filler text here. " * 20 for i in range(1, 40))
    ex = lambda ctx: {"input": "What did Vexa Qorn eat?", "context": ctx, "answers": ["soup"], "_id": "0"}
    at_end = ex(filler + "\nPassage 40:\nVexa Qorn\nVexa Qorn ate soup.")
    at_start = ex("Passage 0:\nVexa Qorn\nVexa Qorn ate soup.\n" + filler)
    assert lb.evidence_location(tok, at_end, "hotpotqa", 4096, 256) == "prompt"
    assert lb.evidence_location(tok, at_start, "hotpotqa", 512, 256) == "cut"
    deep = lb.evidence_location(tok, at_start, "hotpotqa", 100000, 256)
    n = len(tok(lb.build_prompt("hotpotqa", at_start), add_special_tokens=False).input_ids)
    chunks, prompt = lb.split_for_memory(list(range(n - 32)), 256, 32)     # the real cut of the same length
    assert deep == f"memory-{len(chunks)}"
    assert lb.evidence_location(tok, ex(filler), "hotpotqa", 4096, 256) is None
