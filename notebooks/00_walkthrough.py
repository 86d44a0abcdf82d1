# %% [markdown]
# # MemoryLLM, step by step
#
# A walkthrough of *MEMORYLLM: Towards Self-Updatable Large Language Models* (Wang et al., ICML 2024) next to the
# code of `memoryllm_repro`. From the abstract:
#
# > "we introduce MEMORYLLM, a model that comprises a transformer and a fixed-size memory pool within the latent
# > space of the transformer. MEMORYLLM can self-update with text knowledge and memorize the knowledge injected
# > earlier."
#
# Further block quotes summarise the paper section by section (section numbers given; that wording is ours);
# the text around them says what the code does. Everything runs on a laptop CPU in a few minutes
# (`make walkthrough`).

# %% tags=["parameters"]
model = "default"      # "default" (shipped checkpoint or best available), "untrained", "tiny" (CI smoke run)
fade_writes = 30       # unrelated writes while we watch one fact fade
seed = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from memoryllm_repro import expected_retention, memory_parameter_count
from memoryllm_repro.checkpoints import load_model
from memoryllm_repro.data.corpus import DefaultSamples, warmup_contexts
from memoryllm_repro.eval.attention import memory_attention_mass
from memoryllm_repro.plotting import apply_style

apply_style("notebook")
torch.manual_seed(seed)
net, tok, description = load_model(model)
print(description)

# %% [markdown]
# ## 1. The model: φ plus a memory pool θ
#
# > §3.1: the model is M_{θ,φ}. φ is an ordinary transformer (Llama-2-7B in the paper) that stays fixed after
# > training; θ is a pool of hidden-state vectors, N per layer, that the model updates itself.
#
# `net.base` is φ, an unmodified Hugging Face `LlamaForCausalLM` (with LoRA adapters once trained); `net.memory`
# is θ, shape `[L, N, d]`. N = `num_blocks` x `num_tokens` and K = `num_tokens`.

# %%
L, N, K, d = net.L, net.N, net.K, net.d
print(f"L = {L} layers, d = {d}, N = {N} vectors per layer, K = {K} written per update")
print(f"pool: {tuple(net.memory.shape)} = {memory_parameter_count(L, N, d):,} numbers")
print(f"Llama-2-7B as in the paper: 32 x 7680 x 4096 = {memory_parameter_count(32, 7680, 4096):,} "
      "(the paper says 1.066B; the product is 1.007B)")

# %% [markdown]
# ## 2. Writing: one self-update, step by step
#
# > §3.1.2, Fig. 1b: for each layer l, take the last K memory vectors e_θ^l, put them in front of the new text's
# > hidden states, run layer l; the last K outputs become the new memory e_θ^l'. Then drop K random vectors of
# > θ_l, shift the rest left (order kept) and append e_θ^l'. If the text is shorter than K, the last K - n memory
# > vectors are re-encoded too (App. A.1), so exactly K vectors come out.
#
# `inject_memory(ids, update_memory=False)` returns the new vectors `[B, L, K, d]` without touching the pool;
# `write_memory(delta)` commits them. We warm the pool first, then look at one write.

# %%
ids = lambda text: tok(text, return_tensors="pt", add_special_tokens=False).input_ids
with torch.no_grad():
    if not net.initialized:
        for c in warmup_contexts(tok, net.config.num_blocks, seed=seed):
            net.inject_memory(torch.tensor([c]))
context = ids("Context: Quorvin Tallisk was born in Brimhollow. He worked as a clockmaker and owned a parrot "
              "named Zibbet.")
print("context tokens:", context.shape[1], "| K =", K)
with torch.no_grad():
    delta = net.inject_memory(context, update_memory=False)
print("new vectors e_θ':", tuple(delta.shape), "- the prefix they saw was net.memory[:, -K:]")

# %% [markdown]
# Which slots does the commit drop? The drop is drawn from the model's own `torch.Generator`, independently per
# layer (the authors' training code; their 7B inference shared one draw: `drop_memory_per_layer=False`). We
# commit, then read the survivors back from `net.last_keep` and check that the pool is exactly them followed by
# the new vectors.

# %%
old = net.memory.clone()
net.write_memory(delta)
keep = net.last_keep[0].cpu()                      # [L, N-K] sorted survivors of this write
dropped = np.ones((L, N), bool)
for l in range(L):
    dropped[l, keep[l].numpy()] = False
assert all(torch.equal(net.memory[l, : N - K], old[l, keep[l]]) for l in range(L))
assert torch.equal(net.memory[:, -K:], delta[0])
fig, ax = plt.subplots(figsize=(8, 2.6))
ax.imshow(dropped, aspect="auto", cmap="Greys", interpolation="nearest")
ax.grid(False)
ax.set(xlabel="slot before the write (oldest left, newest right)", ylabel="layer",
       title=f"the K = {K} slots dropped in each layer by one write")
plt.show()
print("dropped per layer:", dropped.sum(1)[:5], "... identical sets in two layers:",
      any((dropped[a] == dropped[b]).all() for a in range(L) for b in range(a)))

# %% [markdown]
# ## 3. Reading: every layer attends to its memory
#
# > §3.1.1, Fig. 1a: in every layer the hidden states of the input attend to all N memory vectors of that layer
# > (as extra keys and values); the cost grows linearly with N.
#
# The memory rows are keys/values only, at RoPE positions 0..N (a per-layer BOS vector at 0), the question
# starts at N+1. `net.generate` handles this; nobody builds attention masks by hand. Below: how much attention
# each layer puts on the memory, by slot age (blocks of K slots, oldest left), when answering a question.

# %%
question = ids("Question: What was the name of Quorvin Tallisk's parrot? Answer:")
mass = memory_attention_mass(net, question)   # [L, N/K]: mean attention mass per query on each block
fig, ax = plt.subplots(figsize=(8, 3))
im = ax.imshow(mass, aspect="auto", cmap="viridis")
ax.grid(False)
ax.set(xlabel="memory block (K slots each; right = newest)", ylabel="layer", title="attention mass on memory")
fig.colorbar(im)
plt.show()
print(f"share of attention on memory (all layers): {mass.sum(1).mean():.2f}; "
      f"on the newest block: {mass[:, -1].mean():.3f}")

# %% [markdown]
# ## 4. Inject a fact, ask about it, watch it fade
#
# > §3.1.2 and Eq. 3: each update drops K of N vectors, so a vector survives t later updates with probability
# > (1 - K/N)^t; knowledge fades exponentially, and after N/K updates about 1/e of it is left.
#
# We tag the fact's K vectors per layer and count how many survive each unrelated write, next to (1 - K/N)^t,
# while asking the question after every write.

# %%
def ask():
    out = net.generate(question, max_new_tokens=8)
    return tok.decode(out[0, question.shape[1]:], skip_special_tokens=True)


fact = net.memory[:, -K:].clone()                 # the vectors written for the context above
samples = DefaultSamples(tok, seed=seed + 7)
survival, answers = [], []
with net.memory_snapshot(), torch.no_grad():
    for t in range(fade_writes + 1):
        # a fact vector is "alive" if its first two coordinates still occur in the layer (rows are distinct)
        alive = [(torch.isin(fact[l, :, 0], net.memory[l, :, 0]) & torch.isin(fact[l, :, 1], net.memory[l, :, 1]))
                 .float().mean().item() for l in range(L)]
        survival.append(np.mean(alive))
        if t in (0, 1, 5, 10, 20, 30):
            answers.append((t, ask()))
        unrelated = samples.sample(t, 1)["contexts"][0]
        net.inject_memory(torch.tensor([unrelated]))
for t, a in answers:
    print(f"after {t:2d} unrelated writes: {a!r}")
ts = np.arange(fade_writes + 1)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(ts, survival, marker="o", ms=3, label="fraction of the fact's vectors still in the pool")
ax.plot(ts, [expected_retention(t, N, K) for t in ts], ls=":", color="k", label=r"$(1-K/N)^t$")
ax.set(xlabel="unrelated writes t", ylabel="surviving fraction", ylim=(0, 1.05))
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 5. Training: the three objectives on one example
#
# > §3.2.1 new knowledge incorporation: write x1, predict x2; half the time with gradient through the write
# > (reading only the K new vectors), half the time without it (reading the whole updated pool).
# > §3.2.2 continuous contexts understanding: write x1..x_{n-1} without gradient, predict x_n.
# > §3.2.3 mitigating forgetting: predict a segment whose context was written several updates earlier.
#
# Each is one function in `memoryllm_repro.train.objectives`; the trainer (`python -m memoryllm_repro.train`)
# chooses among them and commits the written vectors after each optimizer step. Here we only evaluate the losses.

# %%
from memoryllm_repro.train import (continuous_contexts_understanding, mitigating_forgetting,
                                   new_knowledge_incorporation)

g = torch.Generator().manual_seed(seed)
s1, s3 = samples.sample(100, 1), samples.sample(101, 3)
t = lambda x: torch.tensor([x])
with net.memory_snapshot(), torch.no_grad():
    la, _ = new_knowledge_incorporation(net, t(s1["contexts"][0]), t(s1["target"]), True, g)
    lb, _ = new_knowledge_incorporation(net, t(s1["contexts"][0]), t(s1["target"]), False, g)
    lc, _ = continuous_contexts_understanding(net, [t(c) for c in s3["contexts"]], t(s3["target"]), g)
    lf, _ = mitigating_forgetting(net, t(s1["target"]))
    plain = net(t(s1["target"]), labels=t(s1["target"]), use_memory=False).loss
print(tok.decode(s1["contexts"][0])[:200], "...\n->", tok.decode(s1["target"])[:200])
print(f"new knowledge, gradient through the write (reads K new vectors): {la.item():.3f}")
print(f"new knowledge, detached write (reads the full pool):             {lb.item():.3f}")
print(f"continuous contexts ({len(s3['contexts'])} contexts):                        {lc.item():.3f}")
print(f"mitigating forgetting (context not written this time):           {lf.item():.3f}")
print(f"the same target without memory:                                  {plain.item():.3f}")
