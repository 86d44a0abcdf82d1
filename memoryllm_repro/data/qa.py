"""One question-answering example and the text formats it is written and asked in (the authors'
`test_qa_memory.py`): the context is written as "Context: ..." and the question asked as "Question: ... Answer:".
Shared by the dataset loaders (`qa_datasets`, `retention_set`) and the evaluations (`eval.retention`,
`eval.integrity`), so it lives below both."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class QAExample:
    id: str
    context: str
    question: str
    answer: str


def context_text(ex: QAExample) -> str:
    return "Context: " + ex.context


def question_text(ex: QAExample) -> str:
    return f"Question: {ex.question} Answer:"
