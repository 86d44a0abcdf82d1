"""Model editors for Table 1. Each editor is a context manager factory: `with editor(model, tok, record): ...`
applies one edit and undoes it on exit, so every record starts from the unedited model. `scoring` says how the
metrics read the edited model (with or without memory, with an in-context prefix)."""
from .ft import FT, FTL
from .ike import IKE
from .memory import MemoryEdit, NoEdit, OnBackbone
from .rome import ROME

__all__ = ["NoEdit", "MemoryEdit", "OnBackbone", "FT", "FTL", "IKE", "ROME"]

