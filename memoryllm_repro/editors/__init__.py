"""Model editors for Table 1. Each editor is a context manager factory: `with editor(model, tok, record): ...`
applies one edit and undoes it on exit, so every record starts from the unedited model. `scoring` says how the
metrics read the edited model (with or without memory, with an in-context prefix)."""
from .ft import FT, FTL
from .ike import IKE
from .memory import MemoryEdit, NoEdit, OnBackbone
from .rome import ROME

__all__ = ["NoEdit", "MemoryEdit", "OnBackbone", "FT", "FTL", "IKE", "ROME"]


def edit_text(record: dict) -> tuple[str, str]:
    """(prompt, new target) of a CounterFact or zsRE record."""
    if "requested_rewrite" in record:
        rw = record["requested_rewrite"]
        return rw["prompt"].format(rw["subject"]), rw["target_new"]["str"]
    return record["src"], record["alt"]
