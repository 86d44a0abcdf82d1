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
    from ..data.editing import edit_fields
    prompt, _, new = edit_fields(record)
    return prompt, new
