#!/usr/bin/env python3
"""Does peft load the adapter `sgpo export --adapter` wrote, and compute what the merged export
(`sgpo export`, which tests/hf.rs checks against our own logits) computes? Loads ADAPTER_DIR's
base (`base/`) with transformers, puts the adapter on it with peft, and compares the logits
on fixed token ids with MERGED_DIR's, and with the base alone (which must differ, or the
adapter did nothing). Usage: check-peft.py ADAPTER_DIR MERGED_DIR"""

import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

adapter_dir, merged_dir = sys.argv[1], sys.argv[2]
load = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
base = load(f"{adapter_dir}/base")
ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10]])
with torch.no_grad():
    base_logits = base(ids).logits
    adapted = PeftModel.from_pretrained(base, adapter_dir).eval()
    peft_logits = adapted(ids).logits
    merged_logits = load(merged_dir)(ids).logits
d = (peft_logits - merged_logits).abs().max().item()
moved = (peft_logits - base_logits).abs().max().item()
print(f"peft {type(adapted).__name__} (r={adapted.peft_config['default'].r}): max |logit difference| to the merged export {d:.2e}; the adapter moves the base's logits by up to {moved:.2e}")
sys.exit(0 if d < 1e-4 and moved > 1e-4 else 1)
