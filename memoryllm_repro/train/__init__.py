"""Training (§3.2): `python -m memoryllm_repro.train --config small`. See loop.py."""
from .loop import TrainConfig, Trainer, build_model, main, num_contexts
from .objectives import (base_distillation, continuous_contexts_understanding, mitigating_forgetting,
                         new_knowledge_incorporation)

__all__ = ["TrainConfig", "Trainer", "build_model", "main", "num_contexts", "base_distillation",
           "new_knowledge_incorporation", "continuous_contexts_understanding", "mitigating_forgetting"]
