#!/usr/bin/env python3
"""Tiny random Llama and Qwen2 checkpoints in Hugging Face's format, with what transformers
computes on them, for the loader's parity tests (tests/hf.rs). Run by scripts/fixtures.sh
in a venv with torch, transformers, safetensors and tokenizers from PyPI; the output is
committed under tests/fixtures/ (a few hundred kB)."""

import json
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM)

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML, as SmolLM2 writes it (a default system turn when none is given).
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The same with Python string methods, as many Hugging Face templates use them.
CHATML_PY = CHATML.replace("message['content']", "message['content'].strip()").replace(
    "message['role'] != 'system'", "not messages[0]['role'].startswith('sys')")
STRINGS = [
    "sort the numbers: 4 1 3",
    "Hello world",
    "  leading spaces, double  spaces and a tab\there",
    "digits 12345 and 3.14159",
    "unicode: café naïve Ünïcödé 日本語 🙂",
    "<|im_start|>user\nhi<|im_end|>",
]
CONVERSATIONS = [
    [{"role": "user", "content": "sort the numbers: 4 1 3"}],
    [{"role": "system", "content": "Improve the draft."}, {"role": "user", "content": "  add: 2 + 2\n\nDraft: 5  "}],
]


def corpus():
    words = "the quick brown fox jumps over lazy dog sort numbers add reverse words hello world".split()
    lines = []
    for i in range(400):
        lines.append(" ".join(words[(i * k) % len(words)] for k in range(1, 9)) + f" {i} {i * 7 % 100}")
    lines += ["café naïve Ünïcödé 日本語 🙂 ünïcode", "digits 0 1 2 3 4 5 6 7 8 9 3.14159", "Hello, world!\tTabs\n"]
    return lines


def tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    return tok


def write_model(name, cls, config, template, dtype, shard):
    path = os.path.join(OUT, name)
    tok = tokenizer(path)
    config.vocab_size = tok.get_vocab_size()
    config.eos_token_id = tok.token_to_id("<|im_end|>")
    config.bos_token_id = tok.token_to_id("<|endoftext|>")
    torch.manual_seed(0)
    model = cls(config).to(dtype)
    # Random init gives tiny norm gains of 1.0; perturb them so a wrong mapping shows.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
            if n.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True, max_shard_size=shard)
    json.dump({"chat_template": template, "bos_token": None, "eos_token": "<|im_end|>",
               "pad_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"},
              open(os.path.join(path, "tokenizer_config.json"), "w"), indent=1)
    hf_tok = PreTrainedTokenizerFast.from_pretrained(path)
    reference = cls.from_pretrained(path, torch_dtype=torch.float32).eval()
    ids = [hf_tok.encode(s, add_special_tokens=False) for s in STRINGS]
    batch = torch.tensor([ids[0][:6] + [5, 9], [7, 3, 11, 2, 40, 41, 42, 43]])
    with torch.no_grad():
        logits = reference(batch).logits
    chats = [hf_tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in CONVERSATIONS]
    chat_ids = [hf_tok.apply_chat_template(c, tokenize=True, add_generation_prompt=True) for c in CONVERSATIONS]
    chat_ids = [list(c["input_ids"]) if hasattr(c, "keys") else list(c) for c in chat_ids]
    expected = {
        "dtype": str(dtype).removeprefix("torch."),
        "strings": STRINGS,
        "ids": ids,
        "decoded": [hf_tok.decode(i, skip_special_tokens=True) for i in ids],
        "conversations": CONVERSATIONS,
        "chat": chats,
        "chat_ids": chat_ids,
        "input": batch.tolist(),
        "logits": [round(x, 6) for x in logits.flatten().tolist()],
        "logits_shape": list(logits.shape),
    }
    json.dump(expected, open(os.path.join(path, "expected.json"), "w"))
    print(f"{path}: vocab {config.vocab_size}, {sum(p.numel() for p in model.parameters())} parameters, {dtype}")


small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5)
write_model("llama-tiny", LlamaForCausalLM, LlamaConfig(**small, rope_theta=10000.0, tie_word_embeddings=True),
            CHATML, torch.float32, "5GB")
write_model("qwen2-tiny", Qwen2ForCausalLM, Qwen2Config(**small, rope_theta=1000000.0, tie_word_embeddings=False),
            CHATML_PY, torch.bfloat16, "40KB")
write_model("llama-tiny-f16", LlamaForCausalLM, LlamaConfig(**small, rope_theta=500000.0, tie_word_embeddings=False),
            CHATML, torch.float16, "5GB")


# ---- GGUF: the same tiny models as llama.cpp would store them (gguf-py writes them) ----
import gguf
import numpy as np
from gguf.quants import dequantize, quantize

Q = gguf.GGMLQuantizationType
GGUF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}
PARTS = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
         "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(hf):
    if hf in GGUF_NAMES:
        return GGUF_NAMES[hf]
    layer, rest = hf.removeprefix("model.layers.").split(".", 1)
    part, suffix = rest.rsplit(".", 1)
    return f"blk.{layer}.{PARTS[part]}.{suffix}"


def permute(w, heads):
    # llama.cpp's order for llama's Q/K rows (convert_hf_to_gguf.py).
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, heads):
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(name, arch, qtype, pre="gpt-2"):
    src = os.path.join(OUT, name)
    cls = LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM
    model = cls.from_pretrained(src, torch_dtype=torch.float32).eval()
    cfg = model.config
    path = os.path.join(OUT, f"{name}.{qtype}.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(model.config.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    tj = json.load(open(os.path.join(src, "tokenizer.json")))
    vocab = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = {t["content"] for t in tj["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in specials else 1 for t, _ in vocab])
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_pad_token_id(cfg.bos_token_id)
    w.add_chat_template(json.load(open(os.path.join(src, "tokenizer_config.json")))["chat_template"])
    state = {}
    for hf, t in model.state_dict().items():
        a = t.numpy().astype(np.float32)
        heads = cfg.num_attention_heads if "q_proj.weight" in hf else cfg.num_key_value_heads
        stored = permute(a, heads) if arch == "llama" and ("q_proj.weight" in hf or "k_proj.weight" in hf) else a
        kind = Q[qtype] if a.ndim == 2 else Q.F32
        data = quantize(stored, kind)
        w.add_tensor(gguf_name(hf), data, raw_dtype=kind)
        back = dequantize(data, kind).reshape(stored.shape)
        state[hf] = torch.from_numpy(unpermute(back, heads) if stored is not a else back)
    if cfg.tie_word_embeddings:
        del state["lm_head.weight"]
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # transformers on the weights llama.cpp would read back.
    model.load_state_dict(state, strict=False)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    e = json.load(open(os.path.join(src, "expected.json")))
    with torch.no_grad():
        logits = model(torch.tensor(e["input"])).logits
    json.dump({"input": e["input"], "logits": [round(x, 6) for x in logits.flatten().tolist()]},
              open(path.removesuffix(".gguf") + ".expected.json", "w"))
    print(f"{path}: {os.path.getsize(path)} bytes")


for q in ["F32", "Q8_0", "Q4_0", "Q4_1"]:
    write_gguf("llama-tiny", "llama", q)
write_gguf("qwen2-tiny", "qwen2", "F16", pre="gpt-2")


# ---- GGUF K-quants: gguf-py cannot quantize them, so the blocks are random (every byte
# pattern is a valid block; scales kept small) and gguf-py's dequantize is the reference ----
BLOCK = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}


def random_blocks(rng, rows, cols, qtype):
    n = rows * cols // 256
    raw = rng.integers(0, 256, size=(n, BLOCK[qtype]), dtype=np.uint8)
    f16 = lambda x: np.frombuffer(np.float16(x).tobytes(), dtype=np.uint8)
    for b in raw:
        if qtype == "Q6_K":
            b[208:210] = f16(rng.uniform(1e-5, 3e-5))
        else:
            b[0:2] = f16(rng.uniform(1e-4, 3e-4))
            b[2:4] = f16(rng.uniform(1e-4, 3e-4))
    return raw.reshape(rows, cols // 256 * BLOCK[qtype])


def write_kquants(name="llama-k"):
    rng = np.random.default_rng(0)
    src = os.path.join(OUT, "llama-tiny")
    cfg = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=True, vocab_size=320, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    path = os.path.join(OUT, f"{name}.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(256)
    w.add_feed_forward_length(512)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    tj = json.load(open(os.path.join(src, "tokenizer.json")))
    vocab = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = {t["content"] for t in tj["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in specials else 1 for t, _ in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]])
    w.add_eos_token_id(2)
    w.add_chat_template(CHATML)
    kinds = {"embed_tokens": "Q6_K", "self_attn": "Q4_K", "mlp": "Q5_K"}
    state = {}
    for hf, t in model.state_dict().items():
        if hf == "lm_head.weight":
            continue
        if t.ndim == 1:
            a = (1.0 + 0.1 * torch.randn_like(t)).numpy().astype(np.float32)
            w.add_tensor(gguf_name(hf), a, raw_dtype=Q.F32)
            state[hf] = torch.from_numpy(a)
            continue
        qtype = next(v for k, v in kinds.items() if k in hf)
        rows, cols = t.shape
        data = random_blocks(rng, rows, cols, qtype)
        w.add_tensor(gguf_name(hf), data, raw_dtype=Q[qtype])
        back = dequantize(data, Q[qtype]).reshape(rows, cols)
        heads = 4 if "q_proj" in hf else 2
        state[hf] = torch.from_numpy(unpermute(back, heads) if ("q_proj" in hf or "k_proj" in hf) else back.copy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    batch = [[5, 9, 17, 40, 2, 7, 80, 81]]
    with torch.no_grad():
        logits = model(torch.tensor(batch)).logits
    json.dump({"input": batch, "logits": [round(x, 6) for x in logits.flatten().tolist()]},
              open(os.path.join(OUT, f"{name}.expected.json"), "w"))
    print(f"{path}: {os.path.getsize(path)} bytes (Q6_K embedding, Q4_K attention, Q5_K MLP)")


write_kquants()
