"""``flaretune export ADAPTER_DIR --merge --out DIR``: a merged full model in safetensors.

The adapter folder is the one the federation writes (``global_model/adapter``). Merging folds the
LoRA product into the base weights (W + (alpha/r)·B·A), so the result needs neither PEFT nor the
adapter at inference time.
"""

import json
import shutil
from pathlib import Path

from flaretune.errors import ConfigError


def export_adapter(adapter_dir, out_dir, merge: bool = True) -> Path:
    from flaretune.models.base import load_tokenizer
    from flaretune.models.lora import LABELS_FILE, load_adapter_model

    adapter_dir, out = Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter_dir}: not a PEFT adapter folder (no adapter_config.json)")
    model, spec = load_adapter_model(adapter_dir)
    out.mkdir(parents=True, exist_ok=True)
    if merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(str(out), safe_serialization=True)
    else:
        model.save_pretrained(str(out), safe_serialization=True)
    load_tokenizer(spec.model_name).save_pretrained(str(out))
    shutil.copy(adapter_dir / LABELS_FILE, out / LABELS_FILE)
    (out / "flaretune_export.json").write_text(json.dumps({"source_adapter": str(adapter_dir), "merged": merge}, indent=2))
    return out


def _run(args) -> int:
    out = export_adapter(args.adapter_dir, args.out, merge=args.merge)
    files = sorted(p.name for p in out.iterdir())
    print(f"wrote {'merged model' if args.merge else 'adapter'} to {out}: {', '.join(files)}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export a trained adapter, optionally merged into the base model")
    parser.add_argument("adapter_dir", help="PEFT adapter folder (e.g. .../global_model/adapter)")
    parser.add_argument("--merge", action="store_true", help="fold the adapter into the base weights")
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(func=_run)
