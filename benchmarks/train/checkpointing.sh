#!/usr/bin/env bash
# Activation checkpointing: peak memory and speed with and without it.
#   bash benchmarks/train/checkpointing.sh
# Trains a GPT-2-shaped model (LAYERS [12], WIDTH [256], HEADS [4], SEQ
# [1024], MICRO_BATCH [4], byte vocabulary) for STEPS [4] steps on RANKS [1]
# rank(s) at each ZeRO stage in STAGES ["0 2"], with
# train.activation_checkpointing none, blocks every 2nd block, and blocks
# (every block), and prints per run the peak host memory of rank 0
# (metrics' memory.peak_host, the process's peak resident set) and the median
# tokens/s, each as a ratio to keeping every activation. On a GPU
# (DEVICE=cuda) memory.peak_device is the figure to read.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
layers=${LAYERS:-12}; width=${WIDTH:-256}; heads=${HEADS:-4}; seq=${SEQ:-1024}; mb=${MICRO_BATCH:-4}
steps=${STEPS:-4}; ranks=${RANKS:-1}; stages=${STAGES:-0 2}; device=${DEVICE:-cpu}
st=${SHARDTUNE:-$here/build/shardtune}
launch=${LAUNCH:-bash $here/scripts/mpirun.sh}
out=${OUT_DIR:-$here/build/bench-checkpointing}
mkdir -p "$out"
if [ ! -f "$out/text-train-00000.h5" ]; then
  cat /usr/share/common-licenses/{GPL-3,Apache-2.0,LGPL-3,MPL-2.0,GFDL-1.3} >"$out/text.txt"
  "$st" prep --tokenizer byte --input "$out/text.txt" --output "$out/text" --overwrite >/dev/null
fi
cat >"$out/base.yaml" <<YAML
model: {arch: gpt2, hidden_size: $width, num_layers: $layers, num_heads: $heads, max_positions: $seq, device: $device}
data: {train: $out/text-train-*.h5, seq_len: $seq, mode: pack, micro_batch: $mb, global_batch: $((mb * ranks))}
optim: {lr: 1.0e-4, warmup_steps: 0}
train: {steps: $steps}
eval: {every: 0, at_start: false}
checkpoint: {every: 0, at_end: false, resume: never}
log: {every: 1, progress: "off"}
YAML
results=()
for z in $stages; do
  for mode in none blocks:2 blocks:1; do
    name="z$z-${mode/:/-}"
    set -- "train.activation_checkpointing=${mode%%:*}"
    [ "$mode" != none ] && set -- "$@" "train.checkpoint_every=${mode#*:}"
    $launch -np "$ranks" "$st" train "$out/base.yaml" "parallel.zero_stage=$z" "$@" \
      "train.output_dir=$out/$name" >/dev/null 2>"$out/$name.log" || { cat "$out/$name.log" >&2; exit 1; }
    results+=("$z $mode $out/$name/metrics.jsonl")
  done
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
rows = []
for arg in sys.argv[1:]:
    z, mode, path = arg.split(" ", 2)
    recs = [json.loads(l) for l in open(path) if '"train"' in l]
    peak = max(r["memory"]["peak_device"] or r["memory"]["peak_host"] for r in recs)
    tps = statistics.median(r["tokens_per_s"] for r in recs[1:] or recs)
    rows.append((int(z), mode, peak, tps))
print(f"{'ZeRO':>4} {'checkpointing':>14} {'peak MiB':>9} {'vs none':>8} {'tokens/s':>9} {'vs none':>8}")
for z, mode, peak, tps in rows:
    base = next(r for r in rows if r[0] == z and r[1] == "none")
    label = "none" if mode == "none" else f"every {mode.split(':')[1]}"
    print(f"{z:>4} {label:>14} {peak / 2**20:>9.0f} {peak / base[2]:>8.2f} {tps:>9.1f} {tps / base[3]:>8.2f}")
PY
