"""``flaretune predict`` and ``flaretune chat``: use the adapter a federation produced.

The adapter folder (``global_model/adapter`` of a run, an HF PEFT folder) is loaded with
``PeftModel.from_pretrained`` on its base model. Its ``labels.json`` says which base, and for an
instruction adapter how it was prompted (``flaretune_task``: system prompt, label words,
``max_length``), so predictions are made exactly as the federation's evaluation made them.

* ``predict ADAPTER FILE``: label a PhraseBank (``sentence@label``) or instruction JSONL file with an
  instruction adapter, or a CoNLL file with an NER adapter; write the predictions and, when the file
  has labels, print accuracy / macro-F1 (entity F1 for NER).
* ``chat ADAPTER "prompt"``: greedy generation through the chat template.
"""

import json
from pathlib import Path
from typing import Optional

from flaretune.cliargs import positive_int
from flaretune.errors import ConfigError


def _load(adapter_dir, num_threads: int = 0):
    from flaretune.models.lora import load_adapter_model, read_adapter_task
    from flaretune.train.lora_trainer import set_threads

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter_dir}: not an adapter folder (no adapter_config.json); "
                          "expected e.g. <run>/global_model/adapter")
    set_threads(num_threads)
    model, spec = load_adapter_model(adapter_dir)
    return model, spec, read_adapter_task(adapter_dir)


def instruct_trainer(adapter_dir, num_threads: int = 0, system_prompt: Optional[str] = None):
    """An :class:`~flaretune.train.causal.InstructTrainer` around the loaded adapter model."""
    from flaretune.data.types import SENTIMENT_LABELS
    from flaretune.train.causal import InstructTrainer

    model, spec, task = _load(adapter_dir, num_threads)
    if spec.is_token_classification:
        raise ConfigError(f"{adapter_dir} is a token-classification (NER) adapter; chat needs an instruction adapter")
    prompt = system_prompt if system_prompt is not None else task.get("system_prompt")
    return InstructTrainer(spec, max_length=int(task.get("max_length", 96)), system_prompt=prompt,
                           label_words=task.get("label_words") or SENTIMENT_LABELS, model=model)


def chat(adapter_dir, prompt: str, max_new_tokens: int = 64, system_prompt: Optional[str] = None) -> str:
    """The adapter's greedy answer to ``prompt`` (one user turn, after the task's system prompt)."""
    import torch

    trainer = instruct_trainer(adapter_dir, system_prompt=system_prompt)
    messages = [{"role": "user", "content": prompt}]
    if trainer.system_prompt is not None:
        messages.insert(0, {"role": "system", "content": trainer.system_prompt})
    ids = trainer.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    if not isinstance(ids, torch.Tensor):  # newer tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    trainer.model.eval()
    with torch.no_grad():
        out = trainer.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                     do_sample=False, pad_token_id=trainer.pad_id,
                                     eos_token_id=trainer.tokenizer.eos_token_id)
    return trainer.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def predict_file(adapter_dir, path, out_path=None) -> dict:
    """Predictions for every record of ``path`` written to ``out_path``; scores when the file has labels."""
    from flaretune.data.formats import infer_format
    from flaretune.models.lora import read_adapter_spec

    path = Path(path)
    spec = read_adapter_spec(adapter_dir)
    fmt = infer_format(path)
    if spec.is_token_classification:
        if fmt != "conll":
            raise ConfigError(f"{path}: an NER adapter labels CoNLL files, got a {fmt} file")
        return _predict_ner(adapter_dir, path, Path(out_path or path.with_suffix(".pred.conll")))
    if fmt not in ("phrasebank", "jsonl"):
        raise ConfigError(f"{path}: an instruction adapter labels PhraseBank or JSONL files, got a {fmt} file")
    return _predict_instruct(adapter_dir, path, Path(out_path or path.with_suffix(".pred.jsonl")))


def _predict_instruct(adapter_dir, path: Path, out_path: Path) -> dict:
    from flaretune.data.site import read_task_file
    from flaretune.data.textfile import write_text
    from flaretune.train.causal import classification_scores

    examples = read_task_file(path, "instruct")
    trainer = instruct_trainer(adapter_dir)
    encoded = trainer.encode(examples)
    predicted = trainer.predict(encoded)
    lines = [json.dumps({"instruction": e.instruction, "input": e.input, "output": e.output, "prediction": p},
                        ensure_ascii=False) for e, p in zip(examples, predicted)]
    write_text(out_path, "".join(line + "\n" for line in lines))
    result = {"predictions": str(out_path), "n": len(examples)}
    gold = [e.label for e in encoded]
    if all(g is not None for g in gold):
        scores = classification_scores(gold, predicted)
        result.update(accuracy=scores["accuracy"], macro_f1=scores["macro_f1"], collapse=scores["collapse"])
    return result


def _predict_ner(adapter_dir, path: Path, out_path: Path) -> dict:
    from flaretune.data.conll import read_conll, write_conll
    from flaretune.data.types import Sentence
    from flaretune.train import ner
    from flaretune.train.ner_trainer import NerTrainer

    model, spec, task = _load(adapter_dir)
    trainer = NerTrainer(spec, max_length=int(task.get("max_length", 64)), model=model)
    sentences = read_conll(path)
    encoded = trainer.encode(sentences)
    predicted = ner.predict(trainer.model, encoded, trainer.id2label, trainer.pad_id)
    # a word cut off by max_length gets no prediction: it is written as 'O'
    out = [Sentence(s.tokens, (tags + ["O"] * len(s.tokens))[: len(s.tokens)]) for s, tags in zip(sentences, predicted)]
    write_conll(out, out_path, header=f"predictions of {adapter_dir} for {path}")
    scores = ner.entity_scores([e.word_tags for e in encoded], predicted)
    return {"predictions": str(out_path), "n": len(sentences), "entity_f1": scores["f1"],
            "collapse": scores.get("collapse")}


def _predict_cmd(args) -> int:
    result = predict_file(args.adapter_dir, args.file, args.out)
    print(f"wrote {result['predictions']} ({result['n']} records)")
    if "accuracy" in result:
        print(f"accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}")
    if "entity_f1" in result:
        print(f"entity F1 {result['entity_f1']:.4f}")
    if result.get("collapse"):
        print(f"WARNING {result['collapse']}")
    return 0


def _chat_cmd(args) -> int:
    print(chat(args.adapter_dir, args.prompt, args.max_new_tokens, args.system_prompt))
    return 0


def register(subparsers) -> None:
    predict = subparsers.add_parser("predict", help="label a PhraseBank / JSONL (or CoNLL) file with an adapter")
    predict.add_argument("adapter_dir", help="adapter folder, e.g. <run>/global_model/adapter")
    predict.add_argument("file", help="PhraseBank .txt or instruction .jsonl (instruction adapter), CoNLL (NER)")
    predict.add_argument("--out", help="predictions file (default: FILE with .pred.jsonl / .pred.conll)")
    predict.set_defaults(func=_predict_cmd)
    talk = subparsers.add_parser("chat", help="greedy answer of an instruction adapter, through the chat template")
    talk.add_argument("adapter_dir")
    talk.add_argument("prompt")
    talk.add_argument("--max-new-tokens", type=positive_int, default=64)
    talk.add_argument("--system-prompt", help="default: the one the adapter was trained with")
    talk.set_defaults(func=_chat_cmd)
