"""MemoryLLM as an lm-evaluation-harness model (`--model memoryllm`): long prompts are read through the memory.

For every request the prompt is split into a long *context* and a short *question*: the context is written into
the memory pool in chunks of `chunk_size` tokens (default 2K, the authors' LongBench setting of two writes' worth),
in reading order, then the model answers (or scores continuations) from the question part alone, reading the
pool. The pool goes back to the checkpoint's own memory after every request (`model.memory_snapshot()`), so
requests never see each other's contexts. Split rule: with `context_marker` the question starts at the marker's
last occurrence in the prompt (e.g. "Question:"); otherwise it is the last `question_tokens` tokens.

    memoryllm-lm-eval run --model memoryllm --model_args pretrained=default,chunk_size=128 \\
        --tasks longbench_hotpotqa --limit 20
    # or in Python: import memoryllm_repro.eval.lm_eval_adapter, then lm_eval.simple_evaluate(model="memoryllm", ...)

See docs/lm_eval.md. Requests sharing one prompt (the choices of a multiple-choice question) share one set of
writes: they are scored inside the same snapshot, which gives the same numbers as writing once per choice.
"""
from __future__ import annotations

import sys
from collections import defaultdict

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm


def _as_int(name, value, minimum=1):
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"memoryllm: {name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"memoryllm: {name} must be >= {minimum}, got {v}")
    return v


@register_model("memoryllm")
class MemoryLLMEval(LM):
    """lm-eval model arguments (`--model_args key=value,...`):

    pretrained       "default" (the shipped checkpoint), "untrained", "tiny", a MemoryLLM.from_pretrained folder
                     or hub id (the authors' YuWangX/memoryllm-7b included), or a built MemoryLLM (Python)
    tokenizer        tokenizer name/folder when it cannot be found from `pretrained` (required with a built model)
    chunk_size       tokens per memory write (default 2 * K)
    question_tokens  without a marker: the last this many prompt tokens are the question (default 256)
    context_marker   the question starts at the last occurrence of this string (falls back to question_tokens
                     when the prompt does not contain it)
    max_gen_toks     default generation budget when a task gives none (default 64)
    device, dtype    where and how to run (default cpu / float32)
    """

    def __init__(self, pretrained="default", tokenizer=None, chunk_size=None, question_tokens=256,
                 context_marker=None, max_gen_toks=64, device=None, dtype="float32", batch_size=1,
                 max_batch_size=None, **unused):
        super().__init__()
        if unused:
            raise ValueError(f"memoryllm: unknown model argument(s) {sorted(unused)}")
        if str(batch_size) not in ("1", "auto", "None"):
            raise ValueError("memoryllm: requests run one at a time (each has its own memory); use batch_size=1")
        from ..backbones import load_tokenizer
        from ..model import MemoryLLM
        question_tokens = _as_int("question_tokens", question_tokens)
        max_gen_toks = _as_int("max_gen_toks", max_gen_toks)
        device = device or "cpu"
        if isinstance(pretrained, MemoryLLM):
            if tokenizer is None:
                raise ValueError("memoryllm: pass tokenizer=... with a built MemoryLLM")
            model, tok = pretrained, tokenizer
        else:
            from ..checkpoints import load_model
            model, tok, _ = load_model(str(pretrained), device=device, dtype=dtype)
        if isinstance(tok, str):
            tok = load_tokenizer(tok)
        self.model = model.to(device).eval()
        self.tok = tok
        self.chunk_size = _as_int("chunk_size", chunk_size if chunk_size is not None else 2 * model.K)
        self.question_tokens = question_tokens
        self.context_marker = context_marker or None
        self.max_gen_toks = max_gen_toks
        self._device = torch.device(device)
        self.writes = 0          # memory writes made so far (all requests): for users and tests
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if prefix is None:
            raise ValueError("memoryllm: the tokenizer has neither a BOS nor an EOS token to start an empty prompt")
        self.prefix_token_id = prefix

    # ------------------------------------------------------------------ prompt -> (memory chunks, question)
    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids if text else []

    def split_prompt(self, text: str) -> tuple[list[list[int]], list[int]]:
        """(context chunks in reading order, question ids). A final chunk shorter than the model's
        `min_context_tokens` is not written: it stays in the question, in front of it."""
        cut = text.rfind(self.context_marker) if self.context_marker else -1
        if cut >= 0:
            context, question = self._encode(text[:cut]), self._encode(text[cut:])
        else:
            ids = self._encode(text)
            context, question = ids[:-self.question_tokens], ids[-self.question_tokens:]
        chunks = [context[i:i + self.chunk_size] for i in range(0, len(context), self.chunk_size)]
        if chunks and len(chunks[-1]) < self.model.config.min_context_tokens:
            question = chunks.pop() + question
        return chunks, question

    def _write(self, chunks):
        for c in chunks:
            self.model.inject_memory(torch.tensor([c], device=self._device))
            self.writes += 1

    # ------------------------------------------------------------------ lm-eval interface
    @torch.no_grad()
    def _score(self, question: list[int], continuation: list[int]) -> tuple[float, bool]:
        """log p(continuation | memory, question) and whether greedy decoding would produce it."""
        inp = (question or [self.prefix_token_id]) + continuation
        logits = self.model(torch.tensor([inp[:-1]], device=self._device)).logits[0, -len(continuation):]
        logp = F.log_softmax(logits.float(), -1)
        target = torch.tensor(continuation, device=logp.device)
        return float(logp.gather(-1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        results = [None] * len(requests)
        by_context = defaultdict(list)           # one set of writes per distinct context
        for i, req in enumerate(requests):
            by_context[req.args[0]].append(i)
        bar = tqdm(total=len(requests), desc="memoryllm loglikelihood", disable=disable_tqdm)
        for context, idxs in by_context.items():
            chunks, question = self.split_prompt(context)
            with self.model.memory_snapshot():
                self._write(chunks)
                for i in idxs:
                    cont = self._encode(requests[i].args[1])
                    if not cont:
                        raise ValueError(f"memoryllm: empty continuation in request {i}")
                    results[i] = self._score(question, cont)
                    self.cache_hook.add_partial("loglikelihood", requests[i].args, results[i])
                    bar.update(1)
        bar.close()
        return results

    @torch.no_grad()
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        """Each `chunk_size` window is scored reading the memory that holds every earlier window (then written
        itself): every token is predicted exactly once, the first one from the prefix token alone."""
        out = []
        for req in tqdm(requests, desc="memoryllm rolling", disable=disable_tqdm):
            ids = self._encode(req.args[0])
            total, prev = 0.0, self.prefix_token_id
            with self.model.memory_snapshot():
                for s in range(0, len(ids), self.chunk_size):
                    window = ids[s:s + self.chunk_size]
                    total += self._score([prev], window)[0]
                    if len(window) >= self.model.config.min_context_tokens:
                        self._write([window])
                    prev = window[-1]
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return out

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False):
        out = []
        for req in tqdm(requests, desc="memoryllm generate", disable=disable_tqdm):
            context, kwargs = req.args[0], dict(req.args[1] or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = _as_int("max_gen_toks", kwargs.pop("max_gen_toks", self.max_gen_toks))
            do_sample = bool(kwargs.pop("do_sample", False)) and float(kwargs.get("temperature", 1.0)) > 0
            gen = {"do_sample": do_sample}
            if do_sample:
                gen.update({k: kwargs[k] for k in ("temperature", "top_p", "top_k") if k in kwargs})
            chunks, question = self.split_prompt(context)
            with self.model.memory_snapshot():
                self._write(chunks)
                ids = torch.tensor([question or [self.prefix_token_id]], device=self._device)
                new = self.model.generate(ids, max_new_tokens=max_new, pad_token_id=self.tok.eos_token_id,
                                          **gen)[0, ids.shape[1]:]
            text = self.tok.decode(new, skip_special_tokens=True)
            for stop in until:                   # cut at the first stop sequence, as lm-eval's HF model does
                if stop and stop in text:
                    text = text[:text.index(stop)]
            out.append(text)
            self.cache_hook.add_partial("generate_until", req.args, text)
        return out

    # lm-eval asks these of any model
    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tok, "name_or_path", "memoryllm").replace("/", "__")

    @property
    def eot_token_id(self):
        return self.tok.eos_token_id

    @property
    def max_length(self):
        return self.model.base.config.max_position_embeddings

    @property
    def max_gen_toks_default(self):
        return self.max_gen_toks


def cli(argv=None):
    """`memoryllm-lm-eval ...`: lm-eval's own command line with the `memoryllm` model registered."""
    from lm_eval.__main__ import cli_evaluate
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    cli()
