#!/usr/bin/env bash
# Scaling report: measured strong and weak scaling on this machine beside
# the planner's prediction, and the planner's extension to 1,024 GPUs for
# the GPU recipes in configs/, as JSON and a PNG plot.
#   bash benchmarks/train/scaling.sh CONFIG [RANKS ...] [-- key=value ...]
# RANKS defaults to "1 2 4". For each world size W it runs `shardtune train`
# for STEPS steps (env, default 12; the median of the last STEPS - 3 read)
# twice:
#   strong scaling: the config's global batch, split over W ranks
#   weak scaling:   global batch x W (the per-rank work stays the same)
# and `shardtune plan CONFIG --ranks W --json` for the same run. Then, for
# each recipe in RECIPES (default: configs/llama-8b-full-zero3-offload.yaml
# and configs/llama-1b-sft-zero2.yaml, the models given by their sizes), the
# planner on GPU_KIND [h100] at 8 ... EXTEND_TO [1024] GPUs, weak scaling
# from the recipe's per-GPU batch at 8 GPUs, with the planner's network:
# NVLink within a node of 8 (360 GB/s bus bandwidth), 400 Gb/s InfiniBand
# per GPU across nodes (40 GB/s); INTER_BUSBW (GB/s) sets the latter.
# Writes OUT_DIR/scaling.json and OUT_DIR/scaling.png (gnuplot) and prints
# the tables. Ranks start through scripts/mpirun.sh on one machine; on a
# cluster set LAUNCH (e.g. "launch/mpirun.sh --gpus-per-node 8 --").
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
config=${1:?usage: scaling.sh CONFIG [RANKS ...] [-- key=value ...]}
shift
ranks=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do ranks+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#ranks[@]} -eq 0 ] && ranks=(1 2 4)
steps=${STEPS:-12}
st=${SHARDTUNE:-$here/build/shardtune}
launch=${LAUNCH:-bash $here/scripts/mpirun.sh}
out=${OUT_DIR:-$here/build/bench-scaling}
gpu=${GPU_KIND:-h100}
extend=${EXTEND_TO:-1024}
inter=${INTER_BUSBW:-}
recipes=${RECIPES:-$here/configs/llama-8b-full-zero3-offload.yaml $here/configs/llama-1b-sft-zero2.yaml}
mkdir -p "$out"
base_batch=$("$st" config "$config" "$@" | sed -n 's/^  global_batch: \([0-9]*\).*/\1/p')

for mode in strong weak; do
  for w in "${ranks[@]}"; do
    batch=$base_batch
    [ "$mode" = weak ] && batch=$((base_batch * w))
    run=(train.steps="$steps" data.global_batch="$batch" log.every=1 log.progress=off eval.every=0
         eval.at_start=false 'data.val=[]' checkpoint.at_end=false checkpoint.resume=never)
    $launch -np "$w" "$st" train "$config" "$@" "${run[@]}" train.output_dir="$out/$mode-np$w" >/dev/null \
      2>"$out/$mode-np$w.log" || { cat "$out/$mode-np$w.log"; exit 1; }
    "$st" plan "$config" "$@" "${run[@]}" --ranks "$w" --json >"$out/$mode-np$w.plan.json"
  done
done

# The GPU recipes' models by their sizes (the recipes name HF folders).
model_of() {
  case "$(basename "$1")" in
    llama-8b-*) echo "model.init='' model.arch=llama model.hidden_size=4096 model.num_layers=32 model.num_heads=32
      model.num_kv_heads=8 model.intermediate_size=14336 model.vocab_size=128256 model.tie_word_embeddings=false" ;;
    llama-1b-*) echo "model.init='' model.arch=llama model.hidden_size=2048 model.num_layers=16 model.num_heads=32
      model.num_kv_heads=8 model.intermediate_size=8192 model.vocab_size=128256 model.tie_word_embeddings=true" ;;
    *) echo "" ;;
  esac
}
ext=()
for r in $recipes; do
  name=$(basename "$r" .yaml)
  gb=$("$st" config "$r" | sed -n 's/^  global_batch: \([0-9]*\).*/\1/p')
  per_gpu=$(( (gb + 7) / 8 ))
  # shellcheck disable=SC2046
  for ((n = 8; n <= extend; n *= 2)); do
    "$st" plan "$r" $(model_of "$r") model.max_positions=8192 data.global_batch=$((per_gpu * n)) --device "$gpu" \
      --ranks "$n" ${inter:+--inter-busbw "$inter"} --json >"$out/ext-$name-$n.plan.json"
  done
  ext+=("$name")
done

python3 "$here/benchmarks/train/scaling_report.py" "$out" "$gpu" "${ranks[*]}" "${ext[*]}" "$extend"
