"""``flaretune bench train-step``: a bank's LoRA training step with and without the shared prompt prefix.

Every bank prompt starts with the same system turn and instruction (about 40 of a message's 70 tokens).
:func:`flaretune.train.causal.answer_logits` runs that prefix once per batch and serves the rows from its
repeated key/value cache. This benchmark times both ways on the same batches of the SYNTHETIC bank
messages in one process, alternating them batch by batch so machine load hits both alike, and checks that
they agree: per batch, loss difference and relative L2 difference of the LoRA gradient.
"""

import argparse
import json
import statistics
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default) or tiny-smollm2")
    parser.add_argument("--batches", type=int, default=6, help="batches timed each way (default 6)")
    parser.add_argument("--batch-size", type=int, default=8, help="records per batch (default 8, the job's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as each site runs)")
    parser.add_argument("--json", default="", help="write the result here")


def run(args) -> int:
    import torch

    from flaretune.data.finance import make_bank
    from flaretune.models.lora import PeftSpec
    from flaretune.train import causal, loop

    torch.set_num_threads(args.threads)
    spec = PeftSpec(model_name=args.model, target_modules=["q_proj", "v_proj"], lora_r=8, lora_dropout=0.0)
    trainer = causal.InstructTrainer(spec, max_length=96, system_prompt="You are a financial analyst.")
    records, _ = make_bank(0, 3, 0, 0.5, n_train=args.batches * args.batch_size, n_test=0, style="messages")
    batches = list(loop.batches(trainer.encode(records), args.batch_size, trainer.pad_id))
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    trainer.model.train()
    seconds = {False: [], True: []}
    loss_diff, grad_diff, prefixes = [], [], []
    for index, (ids, mask, labels) in enumerate(batches):
        result = {}
        for share in ((False, True) if index % 2 == 0 else (True, False)):
            started = time.perf_counter()
            loss = causal.AnswerLoss(trainer.model, share_prefix=share)(ids, mask, labels).loss
            grads = torch.autograd.grad(loss, params)
            seconds[share].append(time.perf_counter() - started)
            result[share] = float(loss.detach()), torch.cat([g.flatten() for g in grads])
        prefixes.append(causal.batch_prefix_length(ids, mask, labels))
        loss_diff.append(abs(result[True][0] - result[False][0]))
        grad_diff.append(float((result[True][1] - result[False][1]).norm() / result[False][1].norm()))
        print(f"batch {index + 1}/{len(batches)}: {ids.shape[1]} columns, prefix {prefixes[-1]}; "
              f"full {seconds[False][-1]:.2f} s, shared prefix {seconds[True][-1]:.2f} s", flush=True)
    full, shared = statistics.median(seconds[False]), statistics.median(seconds[True])
    row = {
        "model": args.model, "batch_size": args.batch_size, "threads": args.threads, "batches": len(batches),
        "median_prefix_tokens": statistics.median(prefixes),
        "full_s_per_step": full, "shared_prefix_s_per_step": shared, "speedup": full / shared,
        "max_loss_diff": max(loss_diff), "max_grad_rel_diff": max(grad_diff),
    }
    print(f"\n{'way':<16}{'s/step (median)':>16}\n{'full batch':<16}{full:>16.3f}\n{'shared prefix':<16}{shared:>16.3f}")
    print(f"speedup {row['speedup']:.2f}x; max loss diff {row['max_loss_diff']:.2e}, "
          f"max gradient rel. diff {row['max_grad_rel_diff']:.2e}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(row, indent=2) + "\n")
    return 0
