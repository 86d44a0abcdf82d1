"""Tidy results on disk: `results/<notebook>/` holds CSV/JSONL rows plus the resolved config, package versions
and git commit, so every number in a figure can be traced to the run that made it."""
from __future__ import annotations

import ast
import hashlib
import json
import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path

from .files import atomic_write, remove_stale_temp, write_text

from .paths import DEFAULT_CHECKPOINT, PACKAGE
from .paths import ROOT as REPO  # outputs root (a checkout or the cwd)
PACKAGES = ("torch", "transformers", "accelerate", "peft", "datasets", "numpy", "pandas")


def environment() -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    import torch
    return {"versions": versions, "git_commit": commit, "git_dirty": dirty, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def results_dir(name: str, root: str | Path | None = None) -> Path:
    d = Path(root) if root is not None else REPO / "results" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


RUN_STATE = ("optimizer.safetensors", "trainer_state.json", "trainer_state.safetensors")   # a snapshot's, not φ's


def model_digest(spec) -> str | None:
    """sha256 over the files a `model` parameter loads ("default": the bundled checkpoint; a folder: its files but
    a training snapshot's optimizer state), None for a spec that names no local folder ("tiny", a hub id). A run
    records it so that a re-draw never shows another checkpoint's numbers under the same spec (e.g. "default"
    after the bundled checkpoint was replaced)."""
    folder = DEFAULT_CHECKPOINT if spec == "default" else Path(str(spec))
    if not (folder / "config.json").is_file():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in RUN_STATE):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def write_run(directory: Path, rows: list[dict], config: dict, extra: dict | None = None,
              table: str = "records.csv") -> Path:
    """rows -> CSV; config + environment (+ extra facts such as wall time, the model's files digest) ->
    config.json. Both written atomically (temp file + rename): a kill leaves the previous run's files or the new
    ones, never half a table."""
    import pandas as pd

    directory = Path(directory)
    remove_stale_temp(directory)
    path = directory / table
    frame = pd.DataFrame(rows)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    digest = {"model_digest": model_digest(config["model"])} if "model" in config else {}
    write_text(directory / "config.json", json.dumps({"config": config, "environment": environment(), **digest,
                                                      **(extra or {})}, indent=1, default=str))
    return path


def parameter_names(source: str) -> list[str]:
    """Names assigned in the `parameters`-tagged cell of a jupytext py:percent notebook, in order."""
    cells = re.split(r"^# %%", source, flags=re.M)[1:]
    tagged = [c for c in cells if re.search(r"""tags=\[[^\]]*["']parameters["']""", c.split("\n", 1)[0])]
    if len(tagged) != 1:
        raise ValueError(f"expected one cell tagged 'parameters', found {len(tagged)}")
    names = []
    for node in ast.parse(tagged[0].split("\n", 1)[1]).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name) and n.id not in names:
                    names.append(n.id)
    return names


def notebook_params(namespace: dict, name: str, source: str | Path | None = None) -> dict:
    """The run's parameters as the notebook has them now (after papermill's injected cell): the names of its own
    parameters cell (`notebooks/<name>.py`, parsed, never retyped), their values from `namespace` (`globals()`)."""
    path = Path(source) if source is not None else next(
        (p for p in (PACKAGE.parent / "notebooks" / f"{name}.py", REPO / "notebooks" / f"{name}.py") if p.is_file()),
        None)
    if path is None:
        raise FileNotFoundError(f"notebooks/{name}.py not found next to the package or under {REPO}")
    names = parameter_names(path.read_text())
    missing = [n for n in names if n not in namespace]
    if missing:
        raise KeyError(f"parameters of {path.name} not defined in the namespace: {missing}")
    return {n: namespace[n] for n in names}


# what only changes how a run is shown (or whether it is recomputed), never its numbers
PRESENTATION_PARAMS = ("recompute", "figure_name")


def reuse_run(directory: Path, params: dict, table: str = "records.csv",
              ignore: tuple[str, ...] = PRESENTATION_PARAMS):
    """(rows, config.json) of an earlier run in `directory` made with the same parameters as `params` (those in
    `ignore` aside) and, for a `model` parameter, the same model files, else None: a notebook re-draws its figure
    from these instead of recomputing them."""
    import pandas as pd
    cfg, path = Path(directory) / "config.json", Path(directory) / table
    if not (cfg.is_file() and path.is_file()):
        return None
    try:
        recorded = json.loads(cfg.read_text())
    except json.JSONDecodeError:
        return None
    now = json.loads(json.dumps(params, default=str))      # as write_run stored it (tuples -> lists, ...)
    before = recorded.get("config", {})
    if {k: v for k, v in now.items() if k not in ignore} != {k: v for k, v in before.items() if k not in ignore}:
        return None
    if "model" in params and recorded.get("model_digest") != model_digest(params["model"]):
        return None
    return pd.read_csv(path), recorded
