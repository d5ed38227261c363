#!/usr/bin/env bash
# The cost of document masking: tokens/s of packed training with and without it.
#   bash benchmarks/train/packing.sh
# Trains a Llama-shaped model (LAYERS [4], WIDTH [256], HEADS [4], KV_HEADS
# [2], byte vocabulary) for STEPS [6] steps on one rank at each sequence
# length in SEQS ["256 1024"] (MICRO_BATCH [4]), on licence texts split into
# their paragraphs (documents of a few hundred bytes, so every window holds
# several), data.mode pack with data.document_mask false and true, and prints
# the median tokens/s of each (the first step left out), the peak host
# memory of each (metrics' memory.peak_host) and their ratios.
# Masked, attention takes a boolean mask (scaled_dot_product_attention with
# attn_mask) instead of the causal flag, and the rotary tables come per row.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
layers=${LAYERS:-4}; width=${WIDTH:-256}; heads=${HEADS:-4}; kv=${KV_HEADS:-2}; seqs=${SEQS:-256 1024}
mb=${MICRO_BATCH:-4}; steps=${STEPS:-6}; device=${DEVICE:-cpu}
st=${SHARDTUNE:-$here/build/shardtune}
out=${OUT_DIR:-$here/build/bench-packing}
mkdir -p "$out"
if [ ! -f "$out/text-train-00000.h5" ]; then
  cat /usr/share/common-licenses/{GPL-3,Apache-2.0,LGPL-3,MPL-2.0,GFDL-1.3} >"$out/text.txt"
  "$st" prep --tokenizer byte --input "$out/text.txt" --output "$out/text" --overwrite >/dev/null
fi
results=()
for seq in $seqs; do
  cat >"$out/base-$seq.yaml" <<YAML
model: {arch: llama, hidden_size: $width, num_layers: $layers, num_heads: $heads, num_kv_heads: $kv,
        intermediate_size: $((width * 8 / 3)), max_positions: $seq, device: $device}
data: {train: $out/text-train-*.h5, seq_len: $seq, mode: pack, micro_batch: $mb, global_batch: $mb}
optim: {lr: 1.0e-4, warmup_steps: 0}
train: {steps: $steps}
eval: {every: 0, at_start: false}
checkpoint: {every: 0, at_end: false, resume: never}
log: {every: 1, progress: "off", tensorboard: false}
YAML
  for mask in false true; do
    name="seq$seq-mask-$mask"
    "$st" train "$out/base-$seq.yaml" "data.document_mask=$mask" "train.output_dir=$out/$name" \
      >/dev/null 2>"$out/$name.log" || { cat "$out/$name.log" >&2; exit 1; }
    results+=("$seq $mask $out/$name/metrics.jsonl")
  done
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
rows = {}
for arg in sys.argv[1:]:
    seq, mask, path = arg.split(" ", 2)
    recs = [json.loads(l) for l in open(path) if '"train"' in l]
    rows[(int(seq), mask)] = (statistics.median(r["tokens_per_s"] for r in recs[1:] or recs),
                              max(r["memory"]["peak_device"] or r["memory"]["peak_host"] for r in recs) / 2**20)
print(f"{'seq':>5} {'tok/s unmasked':>15} {'masked':>8} {'ratio':>6} {'peak MiB unmasked':>18} {'masked':>8} {'ratio':>6}")
for seq in sorted({s for s, _ in rows}):
    (a, ma), (b, mb) = rows[(seq, "false")], rows[(seq, "true")]
    print(f"{seq:>5} {a:>15.0f} {b:>8.0f} {b / a:>6.2f} {ma:>18.0f} {mb:>8.0f} {mb / ma:>6.2f}")
PY
