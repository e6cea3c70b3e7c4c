#!/usr/bin/env python3
"""Writes an Alpaca-format JSONL file (instruction / input / output) of small tasks that the
built-in set does not have (1500 distinct rows), to show `sgpo sft --data` and `sgpo eval --data` on a user's file.

    python3 examples/make_alpaca.py > examples/alpaca_tasks.jsonl
"""
import json
import random

WORDS = ["apple", "river", "stone", "cloud", "green", "tiger", "piano", "lemon", "night", "sugar",
         "house", "chair", "plant", "music", "ocean", "bread", "light", "storm", "zebra", "honey"]


def example(rng):
    kind = rng.randrange(4)
    if kind == 0:
        w = rng.choice(WORDS)
        return "Spell the word backwards.", w, w[::-1]
    if kind == 1:
        n = rng.randrange(100)
        return "What number comes next?", str(n), str(n + 1)
    if kind == 2:
        w, k = rng.choice(WORDS), rng.randrange(2, 5)
        return f"Repeat the word {k} times.", w, " ".join([w] * k)
    ws = rng.sample(WORDS, rng.randrange(2, 5))
    return "Give the first letter of each word.", " ".join(ws), "".join(w[0] for w in ws)


def main():
    rng = random.Random(0)
    seen = set()
    while len(seen) < 1500:
        row = example(rng)
        if row not in seen:
            seen.add(row)
            instruction, inp, out = row
            print(json.dumps({"instruction": instruction, "input": inp, "output": out}))


if __name__ == "__main__":
    main()
