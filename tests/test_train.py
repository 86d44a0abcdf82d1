"""Training: the three objectives, the pool written after each step, resume after a kill, DDP-identical pools."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import warnings

import pytest
import torch

from conftest import make_model, rand_ids
from memoryllm_repro import MemoryLLM, persistence
from memoryllm_repro.train import (TrainConfig, Trainer, base_distillation, continuous_contexts_understanding,
                                   mitigating_forgetting, new_knowledge_incorporation, num_contexts)

warnings.filterwarnings("ignore", message="context of")


class RandomSamples:
    """Random token documents; sample i is a pure function of i, like the real sample streams."""

    def sample(self, index, k):
        r = random.Random(index)
        k = r.randint(1, k)
        ids = lambda: [r.randint(3, 255) for _ in range(r.randint(10, 24))]
        return {"contexts": [ids() for _ in range(k)], "target": ids(), "kind": "random"}

    def regularizer(self, index):
        r = random.Random(-1 - index)
        return [r.randint(3, 255) for _ in range(16)]


class MarkedSamples(RandomSamples):
    """RandomSamples whose targets mark every third token as an answer token (answer_weight)."""

    def sample(self, index, k):
        s = super().sample(index, k)
        return {**s, "answer_mask": [int(i % 3 == 0) for i in range(len(s["target"]))]}


def lora_model(seed=0, dtype=torch.float32):
    model = make_model(seed=seed, dtype=dtype)
    model.add_lora(r=4, lora_dropout=0.0)
    for n, p in model.named_parameters():
        p.requires_grad = "lora_" in n or n == "new_memory_positional_emb"
    with torch.no_grad():   # LoRA B starts at zero; make it non-zero so every path carries gradient
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    for i in range(4):
        model.inject_memory(rand_ids(20, seed=i))
    model.train()
    return model


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("objective", ["write_grad", "full_pool", "continuous", "forgetting"])
def test_step_changes_only_trainable_parameters(objective):
    model = lora_model()
    before, pool = params(model), model.memory.clone()
    g = torch.Generator().manual_seed(0)
    x1, x2, x3 = rand_ids(20, seed=10), rand_ids(15, seed=11), rand_ids(18, seed=12)
    if objective == "continuous":
        loss, deltas = continuous_contexts_understanding(model, [x1, x3], x2, g)
    elif objective == "forgetting":
        loss, deltas = mitigating_forgetting(model, x2)
    else:
        loss, deltas = new_knowledge_incorporation(model, x1, x2, objective == "write_grad", g)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss.backward()
    opt.step()
    after = params(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_" in n or n == "new_memory_positional_emb" for n in changed)
    assert any("lora_" in n for n in changed)
    assert torch.equal(model.memory, pool)          # objectives never write the pool themselves
    assert len(deltas) == {"continuous": 2, "forgetting": 0}.get(objective, 1)


def test_gradient_through_the_write_only_in_process_a():
    for through_write in (True, False):
        model = lora_model()
        g = torch.Generator().manual_seed(0)
        loss, _ = new_knowledge_incorporation(model, rand_ids(20, seed=1), rand_ids(15, seed=2), through_write, g)
        loss.backward()
        grad = model.new_memory_positional_emb.grad   # e_new is used only by the write
        # a LoRA weight of the first layer's MLP: reaches the loss only through the written vectors in (a)
        mlp = model.layers[0].mlp.down_proj.lora_B["default"].weight.grad
        if through_write:
            assert grad is not None and grad.abs().sum() > 0 and mlp.abs().sum() > 0
        else:
            assert grad is None or grad.abs().sum() == 0
            assert mlp is not None   # still trained by the read of x2 itself


def test_grad_first_write_reaches_only_the_first_write():
    """Continuous contexts: the paper's objective trains no write; grad_first_write trains x_1's write (e_new gets a
    gradient), through the later writes' drops, and leaves the deltas to commit identical and detached."""
    x = [rand_ids(20, seed=1), rand_ids(18, seed=2), rand_ids(16, seed=3)]
    out = {}
    for flag in (False, True):
        model = lora_model()
        graphs, inject = [], model.inject_memory      # which writes build a graph, and with what prefix

        def spy(ids, **kw):
            d = inject(ids, **kw)
            rows = kw.get("memory_rows")
            graphs.append((d.requires_grad, rows is not None and rows.requires_grad))
            return d
        model.inject_memory = spy
        loss, deltas = continuous_contexts_understanding(model, x, rand_ids(15, seed=4),
                                                         torch.Generator().manual_seed(0), grad_first_write=flag)
        assert graphs == [(flag, False), (False, False), (False, False)]
        loss.backward()
        out[flag] = (model.new_memory_positional_emb.grad, deltas, loss.item())
        assert all(not d.requires_grad for d in deltas)
        with torch.no_grad():                         # evaluation: no graph even with the flag on
            graphs.clear()
            continuous_contexts_understanding(model, x, rand_ids(15, seed=4), torch.Generator().manual_seed(0),
                                              grad_first_write=True)
            assert graphs == [(False, False)] * 3
    assert out[False][0] is None or out[False][0].abs().sum() == 0
    assert out[True][0] is not None and out[True][0].abs().sum() > 0
    assert out[True][2] == pytest.approx(out[False][2], abs=1e-6)    # same forward, only the gradient differs
    assert all(torch.equal(a, b) for a, b in zip(out[False][1], out[True][1]))


def test_answer_weight_loss(tmp_path):
    """target_loss: HF's labels= loss with no weights and with unit weights; weighting one token moves the loss
    toward that token's cross-entropy; the trainer passes weights only when answer_weight != 1 and a mask exists."""
    from memoryllm_repro.train.objectives import target_loss
    model = lora_model()
    model.eval()
    x = rand_ids(12, seed=3)
    with torch.no_grad():
        plain = model(x, labels=x).loss
        assert target_loss(model, x).item() == plain.item()
        assert target_loss(model, x, torch.ones(1, 12)).item() == pytest.approx(plain.item(), rel=1e-5)
        logits = model(x).logits[0, :-1].float()
        ce = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none")
        w = torch.ones(1, 12)
        w[0, 5] = 1e6                       # token 5 is predicted at position 4
        assert target_loss(model, x, w).item() == pytest.approx(ce[4].item(), rel=1e-4)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="answer_weight"):
            TrainConfig(answer_weight=bad)

    plans = {}
    for weight in (1.0, 4.0):
        tr = make_trainer(tmp_path, steps=1, answer_weight=weight, curriculum_steps=[], curriculum_values=[2],
                          samples=MarkedSamples())
        plans[weight] = [tr.plan() for _ in range(6)]
    assert all("weights" not in p for p in plans[1.0])
    fresh = [p for p in plans[4.0] if p["kind"] != "forgetting"]
    assert fresh and all(p["weights"].shape == p["target"].shape and set(p["weights"].unique().tolist()) == {1.0, 4.0}
                         for p in fresh)
    # every objective hands the plan's weights to the loss (replay steps: the cached target's own weights)
    from memoryllm_repro.train import loop, objectives
    seen, real = [], objectives.target_loss

    def spy(model, target, weights=None, **kw):
        seen.append(weights)
        return real(model, target, weights, **kw)
    objectives.target_loss = spy
    try:
        runner = loop.Objective(tr.model)
        g = torch.Generator().manual_seed(0)
        w = torch.rand(1, 15) + 1
        for plan in ({"kind": "forgetting", "target": rand_ids(15, seed=2)},
                     {"kind": "r", "contexts": [rand_ids(20, seed=1)], "target": rand_ids(15, seed=2),
                      "through_write": True},
                     {"kind": "r", "contexts": [rand_ids(20, seed=1), rand_ids(18, seed=3)],
                      "target": rand_ids(15, seed=2)}):
            seen.clear()
            runner({**plan, "weights": w}, g)
            assert len(seen) == 1 and seen[0] is w
    finally:
        objectives.target_loss = real


def test_curriculum_matches_authors_rule():
    cfg = TrainConfig(curriculum_steps=[10000, 15000, 20000, 30000, 50000, 60000],
                      curriculum_values=[1, 2, 3, 4, 5, 10, 20])
    assert [num_contexts(s, cfg) for s in (0, 10000, 10001, 15001, 60000, 60001)] == [1, 1, 2, 3, 10, 20]


def make_trainer(tmp, steps, seed=0, samples=None, **kw):
    cfg = TrainConfig(**{**dict(out_dir=str(tmp), steps=steps, model=dict(num_blocks=4, num_tokens=8), eval_every=0,
                                save_every=2, lr=1e-2, curriculum_steps=[2], curriculum_values=[1, 3], seed=seed),
                         **kw})
    return Trainer(cfg, model=lora_model(seed), tokenizer=object(), samples=samples or RandomSamples())


def test_pool_written_after_every_step(tmp_path):
    tr = make_trainer(tmp_path, steps=4)
    commits = []
    orig = tr.model.write_memory
    tr.model.write_memory = lambda d: (commits.append(tr.state["step"]), orig(d))
    tr.train()
    log = [json.loads(l) for l in (tmp_path / "log.jsonl").open()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for r in log:   # every step wrote its contexts; a forgetting (replay) step writes nothing
        assert ((r["step"] - 1) in commits) == (r["objective"] != "forgetting")


@pytest.mark.parametrize("answer_weight", [1.0, 4.0])
def test_resume_continues_exactly(tmp_path, answer_weight):
    """Also with answer weights: a replay step after the restart re-predicts its cached target weighted by that
    target's answer mask, saved in the snapshot (else its loss would differ from the uninterrupted run's)."""
    kw = dict(answer_weight=answer_weight, samples=MarkedSamples()) if answer_weight != 1 else {}
    full = make_trainer(tmp_path / "a", steps=8, **kw)
    full.train()
    part = make_trainer(tmp_path / "b", steps=3, **kw)       # "killed" after step 3 (its last checkpoint)
    part.train()
    resumed = make_trainer(tmp_path / "b", steps=8, **kw)    # fresh objects, as after a restart
    assert resumed.resume() and resumed.state["step"] == 3
    assert (resumed.state["cached_mask"] is not None) == (answer_weight != 1 and part.state["cached"] is not None)
    resumed = make_trainer(tmp_path / "b", steps=8, **kw)
    resumed.train()
    log_a = [json.loads(l) for l in (tmp_path / "a" / "log.jsonl").open()]
    log_b = [json.loads(l) for l in (tmp_path / "b" / "log.jsonl").open()]
    assert [r["step"] for r in log_b] == list(range(1, 9))             # nothing repeated, nothing lost
    assert any(r["objective"] == "forgetting" for r in log_b[3:])      # a replay after the restart
    assert [(r["objective"], r["target_tokens"]) for r in log_a] == [(r["objective"], r["target_tokens"])
                                                                      for r in log_b]
    assert torch.allclose(torch.tensor([r["loss"] for r in log_a]), torch.tensor([r["loss"] for r in log_b]))
    assert torch.equal(full.model.memory, resumed.model.memory)
    pa, pb = params(full.model), params(resumed.model)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)


def test_cli_survives_kill_9(tmp_path):
    """A real `python -m memoryllm_repro.train` process killed with SIGKILL resumes from its last checkpoint."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "memoryllm_repro.train", "--config", "small", "--model.backbone", "tiny-random-llama",
            "--model.num_blocks", "4", "--model.num_tokens", "16", "--save_every", "3", "--eval_every", "0",
            "--out_dir", str(out), "--min_len", "24", "--max_len", "48", "--threads", "1"]
    env = dict(os.environ, TQDM_DISABLE="1")
    proc = subprocess.Popen(args + ["--steps", "5000"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "err.txt", "w"))
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "checkpoints").glob("step-0000006")):
        time.sleep(0.02)
        assert proc.poll() is None, (tmp_path / "err.txt").read_text()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [json.loads(l)["step"] for l in (out / "log.jsonl").open()]
    ckpt = max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*") if ".tmp" not in p.name)
    assert ckpt >= 6 and done[-1] < 5000
    res = subprocess.run(args + ["--steps", str(ckpt + 4)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    steps = [json.loads(l)["step"] for l in (out / "log.jsonl").open()]
    # steps logged after the checkpoint were dropped and redone: every step once, none skipped
    assert steps == list(range(1, ckpt + 5))


def test_two_process_gloo_keeps_pools_identical(tmp_path):
    """Two CPU ranks (torchrun, gloo) see different documents; after training both hold the same pool."""
    worker = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    with socket.socket() as s:        # a free port, not a fixed one: another job on the host may hold that
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(port), worker, str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    p0, p1 = torch.load(tmp_path / "pool-0.pt"), torch.load(tmp_path / "pool-1.pt")
    assert torch.equal(p0, p1)
    l0, l1 = torch.load(tmp_path / "lora-0.pt"), torch.load(tmp_path / "lora-1.pt")
    assert all(torch.allclose(l0[n], l1[n]) for n in l0)


def test_base_distillation_is_zero_without_lora_delta_and_pulls_back_otherwise():
    model = make_model(seed=0)
    model.add_lora(r=4, lora_dropout=0.0)        # LoRA B = 0: φ is exactly the backbone
    for i in range(3):
        model.inject_memory(rand_ids(20, seed=i))
    ids = rand_ids(16, seed=3)
    assert base_distillation(model, ids, use_memory=False).item() < 1e-6
    assert base_distillation(model, ids, use_memory=True).item() > 1e-4   # reading the pool changes predictions
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    kl = base_distillation(model, ids, use_memory=False)
    assert kl.item() > 1e-4
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in lora:
        p.requires_grad_(True)
    kl.backward()                                 # the gradient reaches the adapter and the teacher is untouched
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert all(p.requires_grad for p in lora)


def test_distillation_term_is_logged_and_resumes(tmp_path):
    tr = make_trainer(tmp_path, steps=4, kl_weight=0.5)
    tr.train()
    log = [json.loads(l) for l in (tmp_path / "log.jsonl").open()]
    assert all(r["kl"] is not None and r["kl"] >= 0 for r in log)
    again = make_trainer(tmp_path, steps=6, kl_weight=0.5, lr=3e-3)
    again.train()
    assert all(g["lr"] == 3e-3 for g in again.opt.param_groups)   # the config's lr wins on resume
    assert [json.loads(l)["step"] for l in (tmp_path / "log.jsonl").open()] == [1, 2, 3, 4, 5, 6]


def test_linear_learning_rate_decay(tmp_path):
    """lr_decay_from: constant up to that step, then linearly down to lr_final at the last step; switched on by a
    resumed run; bad values refused."""
    cfg = TrainConfig(steps=10, lr=1e-3, lr_decay_from=6, lr_final=2e-4)
    assert [round(cfg.lr_at(s), 6) for s in (0, 5, 6, 8, 10)] == [1e-3, 1e-3, 1e-3, 6e-4, 2e-4]
    assert TrainConfig(steps=10, lr=1e-3).lr_at(9) == 1e-3
    for bad in (dict(lr_decay_from=10), dict(lr_decay_from=-1), dict(lr_decay_from=2.5),
                dict(lr_decay_from=2, lr_final=2e-2), dict(lr_decay_from=2, lr_final=-1.0)):
        with pytest.raises(ValueError):
            TrainConfig(steps=10, lr=1e-2, **bad)
    make_trainer(tmp_path, steps=4).train()
    again = make_trainer(tmp_path, steps=8, lr_decay_from=4, lr_final=2e-3)
    again.train()
    log = [json.loads(l) for l in (tmp_path / "log.jsonl").open()]
    assert "lr" not in log[3]
    assert [r["lr"] for r in log[4:]] == pytest.approx([1e-2, 8e-3, 6e-3, 4e-3])


def test_command_line_parses_numbers_and_model_fields(capsys):
    from memoryllm_repro.train.loop import MODEL_FIELDS, TrainConfig, parse_args
    cfg = parse_args(["--lr", "5e-4", "--steps=10", "--kl_weight", "1", "--out_dir", "runs/x",
                      "--model.num_blocks", "4", "--model.memory_layers", "[1, 2]"])
    assert (cfg.lr, cfg.steps, cfg.kl_weight, cfg.out_dir) == (5e-4, 10, 1, "runs/x")
    assert cfg.model.num_blocks == 4 and cfg.model.memory_layers == [1, 2] and cfg.model.num_tokens == 64
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    import dataclasses
    for f in dataclasses.fields(TrainConfig):          # every field of the training config is on --help
        assert f.name == "model" or f"--{f.name} " in text, f.name
    assert all(f"--model.{n}" in text for n in MODEL_FIELDS)
    with pytest.raises(ValueError, match="unknown model option"):
        TrainConfig.load("small", **{"model.num_block": 3})


def test_snapshot_is_a_model_folder(tmp_path):
    tr = make_trainer(tmp_path, steps=2)
    tr.train()
    snap = tmp_path / "checkpoints" / "step-0000002"
    loaded = MemoryLLM.from_pretrained(snap)
    assert torch.equal(loaded.memory, tr.model.memory) and loaded.initialized
    trained = params(tr.model)
    assert all(torch.equal(p, trained[n]) for n, p in loaded.named_parameters())
    assert not list(snap.glob("*.pt")) and not list(snap.glob("*.pkl")) and not list(snap.glob("*.bin"))


def test_second_stage_starts_from_another_runs_checkpoint(tmp_path):
    make_trainer(tmp_path / "one", steps=2).train()
    two = make_trainer(tmp_path / "two", steps=4, init_from=str(tmp_path / "one" / "checkpoints" / "step-0000002"),
                       kl_weight=0.5)
    two.train()
    assert [json.loads(l)["step"] for l in (tmp_path / "two" / "log.jsonl").open()] == [3, 4]
    with pytest.raises(FileNotFoundError, match="init_from"):
        make_trainer(tmp_path / "three", steps=4, init_from=str(tmp_path)).train()


def test_validation_with_probes_records_accuracy_and_answer_nll(tmp_path):
    """eval_probes: the validation row holds each probe cell's accuracy and its answer NLL; the pool is restored."""
    from memoryllm_repro import load_tokenizer
    tok = load_tokenizer("smollm2-135m")
    m = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    m.add_lora(r=4, lora_dropout=0.0)
    m.inject_memory(tok("A warm pool: one sentence, long enough to be written into memory.",
                        return_tensors="pt").input_ids)
    cfg = TrainConfig(out_dir=str(tmp_path), steps=1, eval_probes="distance", model=dict(num_blocks=4, num_tokens=16))
    tr = Trainer(cfg, model=m, tokenizer=tok, samples=RandomSamples())
    pool = m.memory.clone()
    row = tr.validate()
    for cell in ("distance/+0 writes", "distance/+10 writes", "borderline/natural"):
        assert 0 <= row[cell] <= 1 and row[cell + "/nll"] > 0
    assert torch.equal(m.memory, pool) and m.training


def test_validation_on_the_exported_warm_pool_too(tmp_path):
    """eval_warm_pool: the probes run again on the pool an export would ship (rebuilt by its warm-up recipe, not
    the pool training left); the rows differ from the trained pool's, and pool and drop generator are restored."""
    from memoryllm_repro import load_tokenizer
    from memoryllm_repro.persistence import export_warmup
    tok = load_tokenizer("smollm2-135m")
    m = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    m.add_lora(r=4, lora_dropout=0.0)
    m.inject_memory(tok("A trained pool: one sentence, long enough to be written into memory.",
                        return_tensors="pt").input_ids)
    cfg = TrainConfig(out_dir=str(tmp_path), steps=1, eval_probes="distance", eval_warm_pool=True,
                      model=dict(num_blocks=4, num_tokens=16))
    tr = Trainer(cfg, model=m, tokenizer=tok, samples=RandomSamples())
    pool, gen = m.memory.clone(), m.generator.get_state()
    row = tr.validate()
    assert torch.equal(m.memory, pool) and torch.equal(m.generator.get_state(), gen)
    cell = "distance/+0 writes/nll"
    assert row["warm/" + cell] > 0 and row["warm/" + cell] != row[cell]
    with m.memory_snapshot():            # the export's recipe does rebuild a different pool
        m.warm_up(**export_warmup(m.config), tokenizer=tok)
        assert not torch.equal(m.memory, pool)


def test_keep_every_spares_those_snapshots_from_pruning(tmp_path):
    make_trainer(tmp_path, steps=10, keep_checkpoints=1, keep_every=4).train()
    assert [p.name for p in persistence.snapshots(tmp_path)] == ["step-0000004", "step-0000008", "step-0000010"]
    make_trainer(tmp_path / "odd", steps=7, keep_checkpoints=1, keep_every=3).train()   # 3 and 6 are off the grid
    assert [p.name for p in persistence.snapshots(tmp_path / "odd")] == ["step-0000003", "step-0000006", "step-0000007"]
    with pytest.raises(ValueError, match="keep_every"):
        TrainConfig(keep_every=-1)
    with pytest.raises(ValueError, match="eval_probes"):
        TrainConfig(eval_warm_pool=True)
    make_trainer(tmp_path / "plain", steps=6, keep_checkpoints=1).train()
    assert [p.name for p in persistence.snapshots(tmp_path / "plain")] == ["step-0000006"]


def test_validation_perplexity_comes_with_the_backbones_on_the_same_documents(tmp_path):
    from memoryllm_repro import load_tokenizer
    tok = load_tokenizer("smollm2-135m")
    m = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)
    m.add_lora(r=4, lora_dropout=0.0)
    with torch.no_grad():                 # a LoRA that changes the model (peft starts B at zero)
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    samples = RandomSamples()
    samples.generic_heldout = ["Held-out generic text, a few sentences long. It is never trained on."] * 2
    tr = Trainer(TrainConfig(out_dir=str(tmp_path), steps=1, model=dict(num_blocks=4, num_tokens=16), eval_examples=2,
                             eval_updates=1), model=m, tokenizer=tok, samples=samples)
    first, second = tr.validate(), tr.validate()
    assert first["ppl_backbone"] > 1 and first["ppl_backbone"] != pytest.approx(first["ppl_no_memory"])
    assert second["ppl_no_memory"] == pytest.approx(first["ppl_no_memory"])   # the adapters are back on
