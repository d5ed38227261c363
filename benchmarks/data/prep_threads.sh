#!/usr/bin/env bash
# prep throughput against --threads, per tokenizer layout:
#
#   bash benchmarks/data/prep_threads.sh [ROUNDS=3] [MB=30]
#
# The layouts of benchmarks/peers/tokenizers.sh (gpt2, llama3, llama2 with a
# whole document as one BPE word, metaspace; 32000-token tokenizers trained
# by benchmarks/peers/make_tokenizers.py on Debian's licence texts). The
# input is MB megabytes of its ~4 kB JSONL documents, each copy of the set
# tagged with its number. For every layout, prep runs with 1, 2, ... nproc
# threads (THREADS overrides the list) in alternating rounds; the table
# gives the median MB/s (prep's own count: input bytes over wall time, start
# to the renamed shards) and the speedup over 1 thread.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${1:-3}
mb=${2:-30}
build=${SHARDTUNE_BUILD_DIR:-build}
python=${SHARDTUNE_VENV:-/opt/shardtune/venv}/bin/python
tok=$build/bench-tokenize
work=$build/bench-prep-threads
threads=${THREADS:-$(seq -s ' ' 1 "$(nproc)")}
mkdir -p "$work"
[ -f "$tok/docs_4k.jsonl" ] || "$python" benchmarks/peers/make_tokenizers.py "$tok" 1 >/dev/null
"$python" - "$tok/docs_4k.jsonl" "$work/input.jsonl" "$mb" <<'PY'
import json, sys
docs = [json.loads(l)["text"] for l in open(sys.argv[1])]
out, size, copy = open(sys.argv[2], "w"), 0, 0
while size < float(sys.argv[3]) * 1e6:
    for d in docs:
        line = json.dumps({"text": f"[copy {copy}] " + d}) + "\n"
        out.write(line)
        size += len(line)
    copy += 1
PY
results=$work/results.txt
: >"$results"
for r in $(seq "$rounds"); do
  for layout in gpt2 llama3 llama2 metaspace; do
    for t in $threads; do
      rate=$("$build/shardtune" prep --tokenizer "hf:$tok/$layout.json" --input "$work/input.jsonl" \
               --output "$work/out" --threads "$t" --overwrite | grep -o '[0-9.]* MB/s' | awk '{print $1}')
      echo "$layout $t $rate" >>"$results"
    done
  done
done
"$python" - "$results" "$rounds" "$mb" <<'PY'
import collections, statistics, sys
rates = collections.defaultdict(list)
for line in open(sys.argv[1]):
    layout, t, mbs = line.split()
    rates[(layout, int(t))].append(float(mbs))
threads = sorted({t for _, t in rates})
print(f"prep MB/s by --threads, median of {sys.argv[2]} rounds, {sys.argv[3]} MB of ~4 kB documents")
print(f"{'layout':10s}" + "".join(f"{t:>10d}" for t in threads) + "".join(f"{'x' + str(t):>8s}" for t in threads[1:]))
for layout in ["gpt2", "llama3", "llama2", "metaspace"]:
    med = {t: statistics.median(rates[(layout, t)]) for t in threads}
    print(f"{layout:10s}" + "".join(f"{med[t]:10.2f}" for t in threads)
          + "".join(f"{med[t] / med[threads[0]]:8.2f}" for t in threads[1:]))
PY
