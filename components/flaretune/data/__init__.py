"""Datasets for flaretune: readers (CoNLL, Financial PhraseBank, instruction JSONL), SYNTHETIC
multi-site generators (clinical NER hospitals, financial sentiment banks) and non-IID site splits.

Pure Python + numpy: nothing here imports torch or transformers. The clinical generator loads its
lexicons lazily, on first use.
"""

from flaretune.data.clinical import make_clinical_dataset, make_hospital
from flaretune.data.conll import discover_labels, entity_types, read_conll, write_conll
from flaretune.data.finance import make_bank, make_fin_dataset
from flaretune.data.instructions import read_instructions, write_instructions
from flaretune.data.phrasebank import read_phrasebank, write_phrasebank
from flaretune.data.sites import site_index_from_name, site_name
from flaretune.data.splits import dirichlet_label_split, split_by_entity_mix
from flaretune.data.types import (
    CLINICAL_LABELS,
    CLINICAL_NOTES_LABELS,
    SENTIMENT_INSTRUCTION,
    SENTIMENT_LABELS,
    Example,
    Phrase,
    Sentence,
)

__all__ = [
    "CLINICAL_LABELS", "CLINICAL_NOTES_LABELS", "SENTIMENT_INSTRUCTION", "SENTIMENT_LABELS", "Example", "Phrase", "Sentence",
    "discover_labels", "dirichlet_label_split", "entity_types", "make_bank", "make_clinical_dataset",
    "make_fin_dataset", "make_hospital", "read_conll", "read_instructions", "read_phrasebank",
    "site_index_from_name", "site_name", "split_by_entity_mix", "write_conll", "write_instructions",
    "write_phrasebank",
]
