#!/usr/bin/env python3
"""The PyTorch peer of `sgpo bench`: the same measurements, with the same definitions, on a
`transformers` LlamaForCausalLM of a preset's shape (random weights) or a loaded model, so the
two can be compared (scripts/bench-peer.sh prints ours/peer ratios).

- SFT step: forward + cross-entropy on the response tokens (the first seq_len/8 tokens of each
  row are the prompt, masked out) + backward + clip to norm 1.0 + AdamW (lr 1e-4, no weight
  decay), batch_size rows of seq_len random ids. tokens/s counts batch * (seq_len - 1).
- DPO step, the TRL way with precomputed reference log-probs (zeros): one forward over the
  2 * batch_size chosen and rejected rows concatenated, summed response log-probs per row,
  sigmoid loss with beta 0.1, backward, clip, AdamW. tokens/s counts 2 * batch * (seq_len - 1).
- prefill: a no-grad forward over batch_size x seq_len tokens, logits included (the mean of
  --steps forwards after one warm-up).
- decode: greedy `generate` from a 16-token prompt (row i is the id 3 + i % 3 repeated), with
  and without the KV cache; new tokens/s over all rows.

One warm-up call precedes each timed measurement. Output: readable lines, or with --json one
object in the schema of `sgpo bench --json` plus a "peer" field.
"""

import argparse
import gc
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

# Our ModelConfig presets (src/config/model.rs). All: rms_norm_eps 1e-5, tied embeddings,
# SiLU MLP, no attention bias; rope_theta 10000 unless given.
PRESETS = {
    "tiny": dict(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128),
    "small": dict(vocab_size=512, hidden_size=192, num_hidden_layers=4, num_attention_heads=6,
                  num_key_value_heads=2, intermediate_size=512, max_position_embeddings=160),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=2048,
                         rope_theta=100000.0),
}

LR, WEIGHT_DECAY, GRAD_CLIP, BETA = 1e-4, 0.0, 1.0, 0.1
PROMPT_LEN = 16


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--model", help="a Hugging Face model directory, or a .gguf file, instead of a preset")
    p.add_argument("--batch-size", type=int, default=8, help="rows per SFT step, pairs per DPO step, rows of the prefill")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per training row (capped at the model's context)")
    p.add_argument("--steps", type=int, default=3, help="timed steps of each kind, after one warm-up step")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per row in each decode measurement")
    p.add_argument("--decode-batch", default="1,16", help="rows per decode measurement, comma-separated")
    p.add_argument("--no-generation", action="store_true", help="skip prefill and decode")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    return p.parse_args()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build_model(args):
    if args.model:
        path = args.model
        kwargs = {}
        if path.endswith(".gguf"):
            path, kwargs["gguf_file"] = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
        major_minor = tuple(int(x) for x in transformers.__version__.split(".")[:2])
        kwargs["dtype" if major_minor >= (4, 56) else "torch_dtype"] = torch.float32
        model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
        return model, args.model
    shape = dict(PRESETS[args.preset])
    shape.setdefault("rope_theta", 10000.0)
    config = LlamaConfig(**shape, rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
                         attention_bias=False, mlp_bias=False)
    torch.manual_seed(1)
    return LlamaForCausalLM(config), args.preset


class Peak:
    """The process's peak resident set: reset like ours (writing 5 to /proc/self/clear_refs
    resets VmHWM), else getrusage's lifetime peak. On CUDA also the allocator's peaks."""

    def __init__(self, device):
        self.device = device
        self.resettable = False
        self.lifetime = False

    def reset(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.resettable = True
        except OSError:
            self.resettable = False
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def host(self):
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        self.lifetime = True
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024

    def device_reserved(self):
        return torch.cuda.max_memory_reserved(self.device) if self.device.type == "cuda" else None

    def device_allocated(self):
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device, peak, steps, step):
    """Time `steps` calls of `step` (each returns the tokens it consumed) after one warm-up."""
    step()
    sync(device)
    gc.collect()
    peak.reset()
    t0 = time.perf_counter()
    tokens = 0
    for _ in range(max(steps, 1)):
        tokens += step()
    sync(device)
    dt = time.perf_counter() - t0
    cost = {
        "step_s": dt / max(steps, 1),
        "tokens_per_s": tokens / dt,
        "host_peak_bytes": peak.host(),
        "device_reserved_bytes": peak.device_reserved(),
    }
    if device.type == "cuda":
        cost["device_peak_allocated_bytes"] = peak.device_allocated()
    return cost


def selective_log_softmax(logits, index):
    """TRL's: the log-probability of `index` under `logits`, row by row to bound memory."""
    selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
    logsumexp = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    return selected - logsumexp


def main():
    args = parse_args()
    torch.set_num_threads(max(args.threads, 1))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_peer: --device cuda but torch.cuda.is_available() is false")
    model, name = build_model(args)
    model.to(device=device, dtype=torch.float32)
    attn = getattr(model.config, "_attn_implementation", None) or "unknown"
    params = list(model.parameters())  # deduplicated: tied embeddings count once
    parameters = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    seq_len = min(args.seq_len, model.config.max_position_embeddings)
    if seq_len < 2:
        sys.exit("torch_peer: --seq-len must be at least 2")
    prompt = seq_len // 8
    vocab = model.config.vocab_size
    batch = args.batch_size
    gen = torch.Generator().manual_seed(7)

    def rows(n):
        return torch.randint(0, vocab, (n, seq_len), generator=gen).to(device)

    peak = Peak(device)

    # SFT: rows drawn in turn from a pool of 4 batches, as ours.
    pool = rows(batch * 4)
    model.train()
    optim = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    cursor = [0]

    def sft_step():
        start = (cursor[0] * batch) % pool.shape[0]
        cursor[0] += 1
        ids = pool[start:start + batch]
        labels = ids.clone()
        labels[:, :prompt] = -100
        loss = model(input_ids=ids, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optim.step()
        optim.zero_grad(set_to_none=True)
        loss.item()  # read the loss back, as ours does
        return batch * (seq_len - 1)

    sft = measure(device, peak, args.steps, sft_step)
    del optim, pool
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # DPO, TRL's concatenated forward against fixed reference log-probs.
    chosen, rejected = rows(batch), rows(batch)
    ref_chosen = torch.zeros(batch, device=device)
    ref_rejected = torch.zeros(batch, device=device)
    optim = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    ids = torch.cat([chosen, rejected], dim=0)
    # Target j is token j + 1: a response token when j + 1 >= prompt.
    mask = torch.zeros(2 * batch, seq_len - 1, device=device)
    mask[:, max(prompt - 1, 0):] = 1.0

    def dpo_step():
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        logps = (selective_log_softmax(logits, ids[:, 1:]) * mask).sum(-1)
        chosen_logps, rejected_logps = logps[:batch], logps[batch:]
        margin = (chosen_logps - ref_chosen) - (rejected_logps - ref_rejected)
        loss = -F.logsigmoid(BETA * margin).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optim.step()
        optim.zero_grad(set_to_none=True)
        loss.item()
        return 2 * batch * (seq_len - 1)

    dpo = measure(device, peak, args.steps, dpo_step)
    del optim
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    report = {
        "preset": name,
        "parameters": parameters,
        "trainable_parameters": trainable,
        "lora": "none",
        "batch_size": batch,
        "seq_len": seq_len,
        "sft_step_s": sft["step_s"],
        "sft": sft,
        "dpo": dpo,
        "prefill_tokens_per_s": None,
        "generation": [],
    }
    model.eval()
    if not args.no_generation:
        tokens = rows(batch)

        def prefill():
            with torch.inference_mode():
                last = model(input_ids=tokens, use_cache=False).logits[:, -1]
                return last.float().cpu()

        prefill()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(max(args.steps, 1)):
            prefill()
        sync(device)
        report["prefill_tokens_per_s"] = max(args.steps, 1) * batch * seq_len / (time.perf_counter() - t0)

        # No end-of-sequence id, so every row generates all its tokens.
        gc_ = model.generation_config
        gc_.eos_token_id = None
        gc_.pad_token_id = 0
        gc_.do_sample = False
        for attr in ("temperature", "top_p", "top_k"):
            if hasattr(gc_, attr):
                setattr(gc_, attr, None)
        decode_batches = [int(b) for b in args.decode_batch.split(",") if b.strip()]
        for b in decode_batches:
            prompts = torch.tensor([[3 + i % 3] * PROMPT_LEN for i in range(b)], device=device)
            attention = torch.ones_like(prompts)
            for cache in (True, False):
                def run(n):
                    with torch.inference_mode():
                        out = model.generate(input_ids=prompts, attention_mask=attention, do_sample=False,
                                             max_new_tokens=n, min_new_tokens=n, use_cache=cache)
                    sync(device)
                    return out.shape[0] * (out.shape[1] - PROMPT_LEN)

                run(2)  # warm-up, as ours
                t0 = time.perf_counter()
                generated = run(args.new_tokens)
                dt = time.perf_counter() - t0
                if generated != b * args.new_tokens:
                    log(f"torch_peer: decode batch {b} generated {generated} tokens, not {b * args.new_tokens}")
                report["generation"].append({"batch_size": b, "prompt_len": PROMPT_LEN, "cache": cache,
                                             "tokens_per_s": generated / dt})

    memory_note = "peak RSS since reset" if peak.resettable and not peak.lifetime else "peak RSS over the process lifetime"
    report["peer"] = (f"torch {torch.__version__} transformers {transformers.__version__}, "
                      f"threads {torch.get_num_threads()}, device {device}"
                      + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
                      + f", attn {attn}, float32, {memory_note}")
    report["attn_implementation"] = attn

    if args.json:
        print(json.dumps(report))
        return
    mib = lambda b: "-" if b is None else f"{b / (1 << 20):.0f} MiB"
    print(f"peer: {report['peer']}")
    print(f"{name} ({parameters} parameters, {trainable} trained, LoRA: none), batch {batch} x {seq_len} tokens")
    for label, cost in (("sft step", sft), ("dpo step", dpo)):
        extra = f", device peak allocated {mib(cost['device_peak_allocated_bytes'])}" if "device_peak_allocated_bytes" in cost else ""
        print(f"{label}: {cost['step_s']:.3f} s ({cost['tokens_per_s']:.0f} tokens/s), peak resident "
              f"{mib(cost['host_peak_bytes'])}, device reserved {mib(cost['device_reserved_bytes'])}{extra}")
    if report["prefill_tokens_per_s"] is not None:
        print(f"prefill {batch} x {seq_len}: {report['prefill_tokens_per_s']:.0f} tokens/s")
    for g in report["generation"]:
        print(f"decode batch {g['batch_size']:>2} after a {g['prompt_len']}-token prompt: "
              f"{g['tokens_per_s']:>8.1f} tokens/s ({'with' if g['cache'] else 'no'} cache)")


if __name__ == "__main__":
    main()
