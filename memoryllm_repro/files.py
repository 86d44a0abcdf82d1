"""Atomic files: a kill at any instant leaves the old file or the new one, never a torn one, and a later write
cleans up the temp files a killed one left. Used for memory files, snapshots, trainer state and run records."""
from __future__ import annotations

import glob
import os
import re
import tempfile
from pathlib import Path

_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")     # what mkstemp below names: .<file>.XXXXXXXX.tmp


def remove_stale_temp(folder, name: str | None = None) -> None:
    """Delete temp files a killed `atomic_write` left in `folder` (only those of file `name`, if given). One
    writer per file is assumed: a concurrent writer's temp file would be removed too."""
    folder = Path(folder)
    pattern = f".{glob.escape(name)}.*.tmp" if name else ".*.tmp"
    for p in folder.glob(pattern) if folder.is_dir() else []:
        if _TEMP_NAME.match(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)


def atomic_write(path, write) -> None:
    """Write through a temp file in the same folder, fsync, then os.replace: a kill leaves the old file or the
    new one, never a truncated one (whatever the safetensors version does). `write(tmp_path)` produces the
    content. Temp files of earlier killed writes of the same file are removed first."""
    path = Path(path)
    remove_stale_temp(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fsync_dir(folder) -> None:
    """Make a rename durable (the folder's entry), where the OS allows opening a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
