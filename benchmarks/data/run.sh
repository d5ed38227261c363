#!/usr/bin/env bash
# The data benchmark: prep throughput (MB/s of input and tokens/s) per
# tokenizer, then loader tokens/s per rank on 2 ranks.
#
#   bash benchmarks/data/run.sh [BUILD_DIR] [MB of input, default 20]
#
# The input is real English text from Debian packages (the licence texts in
# /usr/share/common-licenses) as JSONL {"text": ...} paragraphs, repeated to
# the size asked for. The BPE tokenizers are trained by
# tests/tokenize/make_fixtures.py (GPT-2 and Llama-3 layouts, SentencePiece).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build=${1:-build}
mb=${2:-20}
python=${SHARDTUNE_VENV:-/opt/shardtune/venv}/bin/python
work=$build/bench-data
mkdir -p "$work"
[ -f "$work/tok/fixtures.json" ] || "$python" tests/tokenize/make_fixtures.py "$work/tok" >/dev/null
"$python" - "$work/input.jsonl" "$mb" <<'PY'
import glob, json, sys
paras = []
for f in sorted(glob.glob("/usr/share/common-licenses/*")):
    try:
        paras += [p.strip() for p in open(f, encoding="utf-8", errors="ignore").read().split("\n\n") if p.strip()]
    except IsADirectoryError:
        pass
out, size, i = open(sys.argv[1], "w"), 0, 0
while size < float(sys.argv[2]) * 1e6:
    line = json.dumps({"text": f"[{i}] " + paras[i % len(paras)]}) + "\n"
    out.write(line); size += len(line); i += 1
PY
threads=$(nproc)
printf '%-22s %10s %12s %14s\n' tokenizer "MB/s" "tokens/s" "tokens/byte"
for spec in byte "hf:$work/tok/gpt2_style.json" "hf:$work/tok/llama3_style.json" "sp:$work/tok/sp_bpe.model"; do
  name=$(basename "${spec#*:}"); name=${name%.*}
  out=$("$build/shardtune" prep --tokenizer "$spec" --input "$work/input.jsonl" --output "$work/out_$name" \
        --threads "$threads" --overwrite)
  rate=$(echo "$out" | grep -o '[0-9.]* MB/s, [0-9]* tokens/s')
  mbs=$(echo "$rate" | awk '{print $1}'); tps=$(echo "$rate" | awk '{print $3}')
  tokens=$(echo "$out" | awk '/^train:/ {print $4}')
  printf '%-22s %10s %12s %14.3f\n' "$name" "$mbs" "$tps" "$(echo "$tokens / ($mb * 1000000)" | awk "{print $tokens / ($mb * 1000000)}")"
done
echo
flags=(--oversubscribe --bind-to none); [ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
mpirun "${flags[@]}" -np 2 "$build/benchmarks/shardtune_bench_loader" --data "$work/out_gpt2_style" \
  --seq-len 1024 --batch 16 --steps 100
