"""Run a paper figure/table notebook by name, outside Jupyter:

    memoryllm-experiment figure5                      # the small CPU config (the notebook's parameters cell)
    memoryllm-experiment figure5 --full               # + configs/notebooks/figure5_retention.full.yaml
    memoryllm-experiment table1 -p num_records 10     # override single parameters
    memoryllm-experiment figure4 -f my_params.yaml    # a parameters file of your own

Same steps as `make <target>`: the jupytext source notebooks/<notebook>.py becomes an .ipynb under
notebooks/_build/, papermill executes it (cell output streamed to the terminal) and the executed copy lands in
results/<notebook>/. The notebooks live in the repository, not in the wheel: run this from a checkout (or set
MEMORYLLM_REPRO_HOME to one).
"""
from __future__ import annotations

import argparse
import ast
import logging
import sys
from pathlib import Path

import yaml

from .paths import ROOT

# command name -> notebook; several names for one notebook where the paper has a figure and a table from one run
EXPERIMENTS = {
    "walkthrough": "00_walkthrough",
    "figure5": "figure5_retention",
    "figure4": "figure4_longbench",
    "table2": "figure4_longbench",
    "table1": "table1_editing",
    "figure6": "figure6_integrity",
    "figure7": "figure7_ablation",
}
# make figures: every default figure, in this order (figure7 only from trained ablation checkpoints)
DEFAULT_ORDER = ("figure5", "figure4", "table1", "figure6", "figure7")


def notebook_source(name: str, root: Path = ROOT) -> Path:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    src = root / "notebooks" / f"{EXPERIMENTS[name]}.py"
    if not src.is_file():
        raise FileNotFoundError(
            f"{src} not found: the figure notebooks live in the memoryllm-repro repository, not in the installed "
            f"package. Run this command from a checkout (cd into it) or set MEMORYLLM_REPRO_HOME to its path.")
    return src


def parse_value(text: str):
    """A -p value as papermill's CLI reads it: YAML scalars/lists ("3", "0.5", "[squad, nq]", "null")."""
    return yaml.safe_load(text)


def collect_parameters(name: str, full: bool = False, files=(), pairs=(), root: Path = ROOT) -> dict:
    """--full's yaml, then -f files in order, then -p pairs (later wins). Everything is read before anything runs."""
    params: dict = {}
    paths = ([root / "configs" / "notebooks" / f"{EXPERIMENTS[name]}.full.yaml"] if full else []) + \
        [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"parameters file {p} not found")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: a parameters file must be a YAML mapping, got {type(loaded).__name__}")
        params.update(loaded)
    for key, value in pairs:
        params[key] = parse_value(value)
    known = notebook_defaults(name, root)
    unknown = sorted(set(params) - set(known))
    if unknown:   # papermill would only warn and run the notebook with its defaults
        raise ValueError(f"{', '.join(unknown)}: not parameters of notebooks/{EXPERIMENTS[name]}.py "
                         f"(its parameters: {', '.join(known)})")
    return params


def notebook_defaults(name: str, root: Path = ROOT) -> dict:
    """The literal values of a notebook's `parameters` cell (its small CPU config)."""
    src = notebook_source(name, root).read_text()
    cell = src.split('tags=["parameters"]', 1)[1].split("\n", 1)[1].split("# %%", 1)[0]
    out = {}
    for node in ast.parse(cell).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass   # not a literal (an expression): papermill would still override it
    return out


def missing_ablation_checkpoints(configs=None, root: Path = ROOT) -> list[str]:
    """Figure 7's configs (default: the notebook's) without a trained checkpoint; the notebook would draw
    untrained stand-ins for them."""
    from .checkpoints import latest_snapshot
    from .train.loop import TrainConfig
    configs = notebook_defaults("figure7", root)["configs"] if configs is None else configs
    return [c for c in configs if latest_snapshot(root / TrainConfig.load(f"ablation/{c}").out_dir) is None]


def run(name: str, parameters: dict, root: Path = ROOT, kernel: str = "python3", out: Path | None = None,
        prepare_only: bool = False, quiet: bool = False) -> Path:
    import jupytext
    import papermill

    src = notebook_source(name, root)
    nb_name = EXPERIMENTS[name]
    build = root / "notebooks" / "_build"
    build.mkdir(parents=True, exist_ok=True)
    ipynb = build / f"{nb_name}.ipynb"
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    jupytext.write(nb, ipynb)
    out = Path(out) if out is not None else root / "results" / nb_name / f"{nb_name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:   # papermill logs each cell's output at INFO: show it on the terminal, as `papermill --log-output`
        log = logging.getLogger("papermill")
        if not log.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
        log.setLevel(logging.INFO)
    papermill.execute_notebook(str(ipynb), str(out), parameters=parameters, cwd=str(root), kernel_name=kernel,
                               prepare_only=prepare_only, log_output=not quiet, progress_bar=not quiet)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="memoryllm-experiment", description=__doc__.split("\n\n")[0].rstrip(":") + ".",
        epilog="Experiments: " + ", ".join(f"{k} ({v})" for k, v in EXPERIMENTS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", nargs="?", help="which figure/table to run: " + ", ".join(EXPERIMENTS))
    ap.add_argument("--full", action="store_true",
                    help="use the paper-scale parameters in configs/notebooks/<notebook>.full.yaml (GPU)")
    ap.add_argument("-f", "--parameters-file", action="append", default=[], metavar="YAML",
                    help="a YAML mapping of notebook parameters (repeatable; applied after --full)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="set one notebook parameter; VALUE is read as YAML (repeatable; applied last)")
    ap.add_argument("--out", default=None, help="executed notebook path (default results/<notebook>/<notebook>.ipynb)")
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3: this Python)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="write the parameterized notebook without executing it")
    ap.add_argument("--quiet", action="store_true", help="do not stream cell output and the progress bar")
    ap.add_argument("--list", action="store_true", help="list the experiments and their notebooks, then exit")
    ap.add_argument("--check-trained", action="store_true",
                    help="figure7 only: exit 0 if every default ablation has a trained checkpoint, else 1 "
                         "(listing the missing ones); runs nothing")
    a = ap.parse_args(argv)
    if a.list:
        for k, v in EXPERIMENTS.items():
            print(f"{k:12s} notebooks/{v}.py")
        return 0
    if a.experiment is None:
        ap.error("name an experiment (or --list)")
    try:
        if a.check_trained:
            if a.experiment != "figure7":
                ap.error("--check-trained applies to figure7 only")
            missing = missing_ablation_checkpoints()
            if missing:
                print("no trained checkpoint for: " + ", ".join(missing) + " (train them with `make ablations`)")
                return 1
            return 0
        params = collect_parameters(a.experiment, a.full, a.parameters_file, a.parameter)
        out = run(a.experiment, params, kernel=a.kernel, out=a.out, prepare_only=a.prepare_only, quiet=a.quiet)
    except (ValueError, FileNotFoundError) as e:
        print(f"memoryllm-experiment: error: {e}", file=sys.stderr)
        return 2
    print(f"executed notebook: {out}" if not a.prepare_only else f"prepared notebook: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
