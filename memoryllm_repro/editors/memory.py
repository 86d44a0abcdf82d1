"""MemoryLLM with the edit fact written into memory (Table 1, "w/ EF"). The text written is the edit prompt
followed by the new target and a period, e.g. "Lyon is located in the country of Japan." (zsRE: the question
and the new answer). The pool is restored after every record (each edit on a fresh pool)."""
from __future__ import annotations

import contextlib

import torch

from .common import base_only, edit_text


class NoEdit:
    """No edit: the model as it is (`use_memory=False` and `adapters=False` give the plain backbone)."""

    def __init__(self, use_memory: bool = True, adapters: bool = True):
        self.scoring = {"use_memory": use_memory}
        self.adapters = adapters

    @contextlib.contextmanager
    def __call__(self, model, tok, record):
        ctx = model.adapters_disabled() if (not self.adapters and model.config.lora) else contextlib.nullcontext()
        with ctx:
            yield


class MemoryEdit:
    scoring = {"use_memory": True}

    @contextlib.contextmanager
    def __call__(self, model, tok, record):
        prompt, new = edit_text(record)
        ids = tok(f"{prompt} {new}.", add_special_tokens=False, return_tensors="pt").input_ids
        with model.memory_snapshot():
            with torch.no_grad():
                model.inject_memory(ids.to(model.device))
            yield


class OnBackbone:
    """Run an editor on the plain backbone (LoRA off, no memory), as the paper's baselines ran on Llama-2-7B."""

    def __init__(self, editor):
        self.editor = editor
        self.scoring = dict(editor.scoring, use_memory=False)
        editor.scoring = self.scoring     # the wrapped editor fits/scores the same way (FT's loss reads it)

    @property
    def prefix(self):
        return getattr(self.editor, "prefix", "")

    @contextlib.contextmanager
    def __call__(self, model, tok, record):
        with base_only(model), self.editor(model, tok, record):
            yield
