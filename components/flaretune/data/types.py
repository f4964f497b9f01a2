"""The records every reader and generator in ``flaretune.data`` produces, and the fixed label sets."""

from dataclasses import dataclass
from typing import List

# BC5CDR's two entity types in IOB2; the order is the model's label-id order.
CLINICAL_LABELS = ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
# The six types of the SYNTHETIC telegraphic notes (``clinical_notes``, style "notes"), IOB2.
CLINICAL_NOTES_TYPES = ["Chemical", "Disease", "Procedure", "Anatomy", "Test", "Dosage"]
CLINICAL_NOTES_LABELS = ["O"] + [f"{p}-{t}" for t in CLINICAL_NOTES_TYPES for p in ("B", "I")]

# Financial PhraseBank's three classes (Malo et al., 2014).
SENTIMENT_LABELS = ["positive", "negative", "neutral"]
SENTIMENT_INSTRUCTION = (
    "What is the sentiment of this financial statement? "
    "Answer with one word: positive, negative or neutral."
)


@dataclass
class Sentence:
    """One tokenised sentence with one IOB2 tag per token."""

    tokens: List[str]
    tags: List[str]

    def __post_init__(self):
        if len(self.tokens) != len(self.tags):
            raise ValueError(f"Sentence has {len(self.tokens)} tokens but {len(self.tags)} tags")


@dataclass
class Phrase:
    """One labelled sentence of the Financial PhraseBank (``text@label``)."""

    text: str
    label: str


@dataclass
class Example:
    """One instruction-tuning record (Alpaca / FinGPT fields)."""

    instruction: str
    input: str
    output: str
