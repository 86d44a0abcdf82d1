"""The lm-evaluation-harness adapter, offline: tiny local tasks in lm-eval's YAML format (json datasets), run by
lm_eval.simple_evaluate on the tiny random MemoryLLM; every request's context must go through the memory."""
import json
import math

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.tasks import TaskManager  # noqa: E402

from memoryllm_repro import MemoryLLM, load_tokenizer  # noqa: E402
from memoryllm_repro.eval.lm_eval_adapter import MemoryLLMEval  # noqa: E402

FILLER = ("The town keeps a small museum of old maps, and its bakery opens before dawn every day of the week. "
          "Travellers often stop at the bridge to look at the river before they walk on to the square. ")


def write_tasks(tmp_path):
    docs = [{"context": FILLER * 3 + f"The keeper of the lighthouse is named {name}.", "question":
             "Who keeps the lighthouse?", "answer": name, "choices": [name, "Nobody", "A cat"], "label": 0}
            for name in ("Alma", "Bruno", "Cilla")]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = f"""dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_text: "{{{{context}}}}\\nQuestion: {{{{question}}}}\\nAnswer:"
"""
    (tmp_path / "gen.yaml").write_text(f"""task: mem_tiny_gen
{common}output_type: generate_until
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    (tmp_path / "mc.yaml").write_text(f"""task: mem_tiny_mc
{common}output_type: multiple_choice
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
""")
    (tmp_path / "ppl.yaml").write_text(f"""task: mem_tiny_ppl
{common}output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{context}}}}"
metric_list:
  - metric: word_perplexity
""")
    return docs


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16), load_tokenizer("smollm2-135m")


def test_simple_evaluate_writes_every_context_into_memory(tmp_path, tiny):
    model, tok = tiny
    docs = write_tasks(tmp_path)
    lm = MemoryLLMEval(pretrained=model, tokenizer=tok, chunk_size=32, context_marker="\nQuestion:")
    writes, pool = [], model.memory.clone()
    real_inject = model.inject_memory
    model.inject_memory = lambda ids, **kw: (writes.append(ids.shape[1]), real_inject(ids, **kw))[1]
    try:
        res = lm_eval.simple_evaluate(model=lm, tasks=["mem_tiny_gen", "mem_tiny_mc", "mem_tiny_ppl"],
                                      task_manager=TaskManager(include_path=str(tmp_path)), bootstrap_iters=0,
                                      log_samples=False)
    finally:
        del model.inject_memory
    r = res["results"]
    assert 0.0 <= r["mem_tiny_gen"]["exact_match,none"] <= 1.0
    assert 0.0 <= r["mem_tiny_mc"]["acc,none"] <= 1.0
    assert math.isfinite(r["mem_tiny_ppl"]["word_perplexity,none"]) and r["mem_tiny_ppl"]["word_perplexity,none"] > 1
    # each context (about 130 tokens before "Question:") is written in 32-token chunks: gen 3 docs, mc 3 docs
    # (choices share their context's writes), ppl 3 docs (windows written after being scored)
    q_text = "\nQuestion: " + docs[0]["question"] + "\nAnswer:"
    chunks, question = lm.split_prompt(docs[0]["context"] + q_text)
    enc = lambda t: tok(t, add_special_tokens=False).input_ids
    assert sum(chunks, []) + question == enc(docs[0]["context"]) + enc(q_text)   # nothing lost, order kept
    assert len(chunks) >= 3 and all(len(c) == 32 for c in chunks[:-1]) and 16 <= len(chunks[-1]) <= 32
    assert question[-len(enc(q_text)):] == enc(q_text)
    assert len(writes) == lm.writes >= 6 * len(chunks) and max(writes) <= 32
    assert torch.equal(model.memory, pool)            # every request ran inside a snapshot of the pool


def test_split_without_marker_and_bad_arguments(tiny):
    model, tok = tiny
    lm = MemoryLLMEval(pretrained=model, tokenizer=tok, question_tokens=10)
    assert lm.chunk_size == 2 * model.K
    ids = tok(FILLER * 4, add_special_tokens=False).input_ids
    chunks, question = lm.split_prompt(FILLER * 4)
    assert sum(chunks, []) + question == ids and len(question) >= 10
    assert all(len(c) >= model.config.min_context_tokens for c in chunks)
    with pytest.raises(ValueError, match="chunk_size"):
        MemoryLLMEval(pretrained=model, tokenizer=tok, chunk_size=0)
    with pytest.raises(ValueError, match="unknown model argument"):
        MemoryLLMEval(pretrained=model, tokenizer=tok, chunk=3)
    with pytest.raises(ValueError, match="tokenizer"):
        MemoryLLMEval(pretrained=model)


def test_registered_under_memoryllm():
    from lm_eval.api.registry import get_model
    assert get_model("memoryllm") is MemoryLLMEval


def test_by_name_with_model_args_string(tmp_path):
    write_tasks(tmp_path)
    res = lm_eval.simple_evaluate(model="memoryllm", model_args="pretrained=tiny,chunk_size=32,question_tokens=12",
                                  tasks=["mem_tiny_mc"], limit=1, device="cpu", batch_size=1,
                                  task_manager=TaskManager(include_path=str(tmp_path)), bootstrap_iters=0)
    assert res["results"]["mem_tiny_mc"]["acc,none"] in (0.0, 1.0)
