"""The peer of shardtune_bench_tokenize: Hugging Face `tokenizers` encoding
the same JSONL documents on one thread, ROUNDS times; prints the same JSON
line (first_seconds: the first round, a fresh tokenizer; seconds: the best;
tokens, bytes, docs, ids_hash: FNV-1a over the ids).

  python hf_tokenize.py TOKENIZER.json DOCS.jsonl [ROUNDS]
"""
import json
import os
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    docs = [json.loads(line)["text"] for line in open(sys.argv[2], encoding="utf-8")]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    best, first = float("inf"), None
    for _ in range(rounds):
        t0 = time.perf_counter()
        encoded = [tok.encode(d, add_special_tokens=False).ids for d in docs]
        seconds = time.perf_counter() - t0
        first = seconds if first is None else first
        best = min(best, seconds)
    h, tokens = 1469598103934665603, 0
    for ids in encoded:
        tokens += len(ids)
        for i in ids:
            h = ((h ^ i) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    print(json.dumps({"first_seconds": first, "seconds": best, "tokens": tokens, "bytes": sum(len(d.encode()) for d in docs),
                      "docs": len(docs), "ids_hash": f"{h:016x}"}))


if __name__ == "__main__":
    main()
