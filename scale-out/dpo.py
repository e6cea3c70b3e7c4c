#!/usr/bin/env python3
"""Continue SGPO's preference step with TRL's DPOTrainer, on as many GPUs or nodes as accelerate gives.

sgpo builds the pairs (`pairs-iterN.jsonl` in a run directory: prompt/chosen/rejected strings) and
exports the model (`sgpo export --model RUN --out DIR`); this script runs DPO on them and writes a
Hugging Face directory that `sgpo eval`/`generate`/`train --init` read back.

    python scale-out/dpo.py --model DIR --pairs RUN/pairs-iter*.jsonl --out OUT
    accelerate launch scale-out/dpo.py --model DIR --pairs ... --out OUT   # several GPUs or nodes
"""

import argparse
import json
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face model directory (sgpo export)")
    p.add_argument("--pairs", required=True, nargs="+", help="pairs-iterN.jsonl files from sgpo runs")
    p.add_argument("--out", required=True, help="directory for the trained model and tokenizer")
    p.add_argument("--beta", type=float, default=0.1, help="as sgpo's --beta (default 0.1)")
    # TRL's default. sgpo's own 5e-5 is tuned for its tiny presets; steps that large damage a
    # pretrained model quickly, and 5e-7..1e-6 is the usual full-parameter DPO range.
    p.add_argument("--lr", type=float, default=1e-6, help="learning rate (default 1e-6, TRL's; try ~1e-5 with LoRA)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the pairs (sgpo's dpo_epochs: 1)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimiser steps (smoke runs)")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per device per micro-batch")
    p.add_argument("--grad-accum", type=int, default=4, help="micro-batches per step (4x4 = sgpo's batch of 16 on one device)")
    p.add_argument("--max-length", type=int, default=1024, help="tokens of prompt+answer kept (TRL keeps the start)")
    p.add_argument("--loss-type", choices=["sigmoid", "ipo"], default="sigmoid", help="as sgpo's --loss")
    p.add_argument("--lora-rank", type=int, default=0, help="train a LoRA adapter of this rank (merged on save); 0: full")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (fp32 master weights)")
    return p.parse_args()


def load_pairs(paths):
    """sgpo writes plain strings; TRL applies the chat template only to conversational rows, and sgpo
    trains through the model's chat template, so each pair becomes a one-turn conversation."""
    rows = []
    for path in paths:
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except OSError as e:
            sys.exit(f"error: {path}: {e.strerror}")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                pair = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"error: {path}:{n}: not JSON ({e.msg} at column {e.colno})")
            if not isinstance(pair, dict):
                sys.exit(f"error: {path}:{n}: expected a JSON object with prompt, chosen and rejected")
            for key in ("prompt", "chosen", "rejected"):
                if not isinstance(pair.get(key), str):
                    what = "missing" if key not in pair else "not a string"
                    sys.exit(f"error: {path}:{n}: field {key!r} is {what}")
            rows.append({
                "prompt": [{"role": "user", "content": pair["prompt"]}],
                "chosen": [{"role": "assistant", "content": pair["chosen"]}],
                "rejected": [{"role": "assistant", "content": pair["rejected"]}],
            })
    if not rows:
        sys.exit(f"error: no pairs in {', '.join(paths)}")
    return rows


def main():
    args = parse_args()
    rows = load_pairs(args.pairs)  # before the heavy imports, so a bad file fails in a second

    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.chat_template is None:
        sys.exit(f"error: {args.model} has no chat template; sgpo's pairs need one (sgpo export writes it)")

    config = DPOConfig(
        output_dir=args.out,
        beta=args.beta,
        loss_type=[args.loss_type],
        learning_rate=args.lr,
        lr_scheduler_type="constant",  # as sgpo's DPO optimiser
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        max_length=args.max_length,
        seed=args.seed,
        use_cpu=args.cpu,
        bf16=args.bf16,  # TRL turns bf16 on by default, which CPUs and older GPUs do badly
        # Mixed precision keeps fp32 weights: DPO's small updates would round away in bf16 weights.
        model_init_kwargs={"dtype": "float32"},
        logging_steps=1,
        save_strategy="no",  # only the final model; the pairs are cheap to train on again
        report_to="none",
    )
    peft_config = None
    if args.lora_rank > 0:
        from peft import LoraConfig

        # With an adapter TRL needs no second copy of the model: the reference is the adapter-less base.
        peft_config = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, target_modules="all-linear",
                                 task_type="CAUSAL_LM")

    trainer = DPOTrainer(model=args.model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=peft_config)
    result = trainer.train()
    if trainer.accelerator.is_main_process:
        print(f"trained {result.global_step} steps on {len(rows)} pairs: mean loss {result.training_loss:.6f}")

    if peft_config is None:
        trainer.save_model(args.out)  # gathers sharded weights; writes the tokenizer too
    else:
        # sgpo reads plain model directories, not adapters: save the adapter, then merge it on one process.
        adapter = f"{args.out}/adapter"
        trainer.save_model(adapter)
        trainer.accelerator.wait_for_everyone()
        if trainer.accelerator.is_main_process:
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(args.model, dtype="float32")
            merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
            merged.save_pretrained(args.out)
            tokenizer.save_pretrained(args.out)
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
