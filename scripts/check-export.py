#!/usr/bin/env python3
"""Does transformers load what `sgpo export` wrote, and compute what we compute? For each
EXPORTED_DIR REFERENCE.json pair (a fixture's expected.json: input ids and logits, which our
loader matches within 1e-4 in tests/hf.rs), load the directory with AutoModelForCausalLM and
AutoTokenizer and print the largest logit difference. Usage: check-export.py DIR JSON [DIR JSON ...]"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

worst = 0.0
for directory, reference in zip(sys.argv[1::2], sys.argv[2::2]):
    e = json.load(open(reference))
    model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(directory)
    with torch.no_grad():
        logits = model(torch.tensor(e["input"])).logits.flatten()
    d = (logits - torch.tensor(e["logits"])).abs().max().item()
    prompt = tok.apply_chat_template([{"role": "user", "content": "sort the numbers: 4 1 3"}], tokenize=False, add_generation_prompt=True)
    print(f"{directory}: {type(model).__name__}, max |logit difference| {d:.2e}; chat prompt {prompt!r}")
    worst = max(worst, d)
sys.exit(0 if worst < 1e-4 else 1)
