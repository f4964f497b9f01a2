"""Human-readable summaries of a dataset, for ``flaretune data check`` and ``split``."""

from collections import Counter
from typing import List, Sequence

from flaretune.data.conll import count_entities, count_tags, entity_spans
from flaretune.data.types import Example, Phrase, Sentence

MAX_LABELS_LISTED = 20


def _counts(counter: Counter) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def summarize_conll(sentences: Sequence[Sentence]) -> List[str]:
    tags = count_tags(sentences)
    empty = sum(1 for s in sentences if not entity_spans(s.tags))
    return [
        f"sentences: {len(sentences)}",
        f"tokens: {sum(len(s.tokens) for s in sentences)}",
        f"labels: {_counts(tags)}",
        f"entities: {_counts(count_entities(sentences)) or 'none'}",
        f"sentences without entities: {empty}",
    ]


def summarize_phrasebank(phrases: Sequence[Phrase]) -> List[str]:
    return [
        f"sentences: {len(phrases)}",
        f"tokens: {sum(len(p.text.split()) for p in phrases)}",
        f"labels: {_counts(Counter(p.label for p in phrases))}",
    ]


def label_counts(examples: Sequence[Example]) -> Counter:
    """Outputs as labels when they form a small label set (sentiment words), else empty."""
    outputs = Counter(e.output.strip() for e in examples)
    return outputs if len(outputs) <= MAX_LABELS_LISTED else Counter()


def summarize_instructions(examples: Sequence[Example]) -> List[str]:
    tokens = sum(len(f"{e.instruction} {e.input} {e.output}".split()) for e in examples)
    labels = label_counts(examples)
    distinct_outputs = len({e.output for e in examples})
    return [
        f"examples: {len(examples)}",
        f"tokens (whitespace): {tokens}",
        f"instructions: {len({e.instruction for e in examples})} distinct",
        f"labels: {_counts(labels)}" if labels else f"outputs: {distinct_outputs} distinct (free text)",
    ]


SUMMARIES = {"conll": summarize_conll, "phrasebank": summarize_phrasebank, "jsonl": summarize_instructions}
