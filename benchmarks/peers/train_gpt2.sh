#!/usr/bin/env bash
# Training throughput on the CPU, shardtune side by side with what a
# PyTorch user would run instead, on the same GPT-2 config.json, batch,
# sequence length and threads (benchmarks/peers/torch_train.py):
#   shardtune ZeRO 0  vs  DistributedDataParallel + AdamW
#   shardtune ZeRO 1  vs  DDP + ZeroRedundancyOptimizer
#   shardtune ZeRO 2  vs  DDP + ZeroRedundancyOptimizer
#   shardtune ZeRO 3  vs  FSDP2 (fully_shard per block)
# all over 2 ranks (MPI for shardtune, gloo for PyTorch), one intra-op
# thread per rank, float32, AdamW, clipping at 1.0, no dropout.
#
#   bash benchmarks/peers/train_gpt2.sh [ROUNDS=2]
#
# Environment: LAYERS [4], WIDTH [256], HEADS [4], VOCAB [50257], SEQ [256],
# MICRO_BATCH [4], GLOBAL_BATCH [8], STEPS [8 timed], WARMUP [3], RANKS [2],
# STAGES ["0 1 2 3"], FAMILY [gpt2; llama, qwen3 or gemma3: a config.json of
# that family of the same sizes, transformers' LlamaForCausalLM,
# Qwen3ForCausalLM or Gemma3ForCausalLM on the peer's side, with FFN
# [WIDTH*8/3], KV_HEADS [HEADS] and TIE [false] for tie_word_embeddings;
# gemma3 windows SEQ/4 tokens on all layers but every WINDOW_EVERY-th [2]],
# LOAD [0: with LOAD=1 one busy process per core runs
# beside both sides, to measure them on a loaded machine], OUT_DIR
# [build/bench-train-peers], LAUNCH [scripts/mpirun.sh: shardtune's
# launcher: any that takes "-np N CMD...", e.g. "mpirun --bind-to none"].
# Alternating rounds in one invocation; prints each round, then per stage
# the median tokens/s of each side, the ratio, and the CPU seconds per wall
# second of rank 0, and of shardtune's communication thread alone (a thread
# that spun while waiting would show there).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rounds=${1:-2}
layers=${LAYERS:-4}; width=${WIDTH:-256}; heads=${HEADS:-4}; vocab=${VOCAB:-50257}
seq=${SEQ:-256}; mb=${MICRO_BATCH:-4}; gb=${GLOBAL_BATCH:-8}; steps=${STEPS:-8}; warmup=${WARMUP:-3}
ranks=${RANKS:-2}; stages=${STAGES:-0 1 2 3}; load=${LOAD:-0}
family=${FAMILY:-gpt2}; ffn=${FFN:-$((width * 8 / 3))}; kv_heads=${KV_HEADS:-$heads}; tie=${TIE:-false}
bad() { echo "train_gpt2.sh: $1" >&2; exit 2; }
for v in FFN:$ffn KV_HEADS:$kv_heads; do
  [[ ${v#*:} =~ ^[1-9][0-9]*$ ]] || bad "${v%%:*} must be a positive integer, not '${v#*:}'"
done
[ $((heads % kv_heads)) = 0 ] || bad "KV_HEADS ($kv_heads) must divide HEADS ($heads)"
[ "$tie" = true ] || [ "$tie" = false ] || bad "TIE must be true or false, not '$tie'"
venv=${SHARDTUNE_VENV:-/opt/shardtune/venv}
st=${SHARDTUNE:-$here/build/shardtune}
out=${OUT_DIR:-$here/build/bench-train-peers}
launch=${LAUNCH:-bash $here/scripts/mpirun.sh}
mkdir -p "$out/gpt2"
if [ "$family" = gpt2 ]; then
  cat >"$out/gpt2/config.json" <<JSON
{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": $vocab, "n_positions": $seq,
 "n_embd": $width, "n_layer": $layers, "n_head": $heads, "activation_function": "gelu_new",
 "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "layer_norm_epsilon": 1e-5,
 "tie_word_embeddings": true, "torch_dtype": "float32"}
JSON
elif [ "$family" = llama ]; then
  cat >"$out/gpt2/config.json" <<JSON
{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": $vocab,
 "max_position_embeddings": $seq, "hidden_size": $width, "intermediate_size": $ffn,
 "num_hidden_layers": $layers, "num_attention_heads": $heads, "num_key_value_heads": $kv_heads,
 "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "attention_dropout": 0.0,
 "tie_word_embeddings": $tie, "torch_dtype": "float32"}
JSON
elif [ "$family" = qwen3 ]; then
  cat >"$out/gpt2/config.json" <<JSON
{"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "vocab_size": $vocab,
 "max_position_embeddings": $seq, "hidden_size": $width, "intermediate_size": $ffn,
 "num_hidden_layers": $layers, "num_attention_heads": $heads, "num_key_value_heads": $kv_heads,
 "head_dim": $((width / heads)), "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
 "attention_bias": false, "use_sliding_window": false, "attention_dropout": 0.0,
 "tie_word_embeddings": $tie, "torch_dtype": "float32"}
JSON
elif [ "$family" = gemma3 ]; then
  # Gemma 3's layout: windows of SEQ/4 on every layer but each WINDOW_EVERY-th [2 here; 6 in the
  # released models, which a 4-layer model would not reach], local and global rotary bases.
  every=${WINDOW_EVERY:-2}
  [[ $every =~ ^[1-9][0-9]*$ ]] || bad "WINDOW_EVERY must be a positive integer, not '$every'"
  types=$(python3 -c "import json; print(json.dumps(['full_attention' if (i + 1) % $every == 0 else 'sliding_attention' for i in range($layers)]))")
  cat >"$out/gpt2/config.json" <<JSON
{"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"], "vocab_size": $vocab,
 "max_position_embeddings": $seq, "hidden_size": $width, "intermediate_size": $ffn,
 "num_hidden_layers": $layers, "num_attention_heads": $heads, "num_key_value_heads": $kv_heads,
 "head_dim": $((width / heads)), "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
 "query_pre_attn_scalar": $((width / heads)), "sliding_window": $((seq / 4)), "layer_types": $types,
 "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
 "attention_bias": false, "attention_dropout": 0.0, "final_logit_softcapping": null,
 "attn_logit_softcapping": null, "tie_word_embeddings": $tie, "torch_dtype": "float32"}
JSON
else
  bad "FAMILY must be gpt2, llama, qwen3 or gemma3, not '$family'"
fi
if [ ! -f "$out/text-train-00000.h5" ]; then
  cat /usr/share/common-licenses/{GPL-3,Apache-2.0,LGPL-3,MPL-2.0,GFDL-1.3} >"$out/text.txt"
  "$st" prep --tokenizer byte --input "$out/text.txt" --output "$out/text" --overwrite >/dev/null
fi
for z in $stages; do
  cat >"$out/zero$z.yaml" <<YAML
model: {config: $out/gpt2, device: cpu}
data: {train: $out/text-train-*.h5, seq_len: $seq, mode: pack, micro_batch: $mb, global_batch: $gb}
optim: {lr: 1.0e-4, weight_decay: 0.1, warmup_steps: 0, max_grad_norm: 1.0}
parallel: {zero_stage: $z}
dist: {intra_op_threads: 1}
train: {steps: $((steps + warmup)), output_dir: $out/run-zero$z}
eval: {every: 0, at_start: false}
checkpoint: {every: 0, at_end: false, resume: never}
log: {every: 1, progress: off}
YAML
done

busy=()
stop_load() { [ ${#busy[@]} -eq 0 ] || kill "${busy[@]}" 2>/dev/null || true; }
trap stop_load EXIT
if [ "$load" = 1 ]; then
  for _ in $(seq "$(nproc)"); do (while :; do :; done) & busy+=($!); done
fi

shardtune_run() {  # STAGE ROUND -> "tokens/s process_cpu_per_wall comm_thread_cpu_per_wall"
  rm -rf "$out/run-zero$1"
  /usr/bin/time -f "%U %S %e" -o "$out/shardtune-$1-$2.time" \
    $launch -np "$ranks" "$st" train "$out/zero$1.yaml" >"$out/shardtune-$1-$2.log" 2>&1 \
    || { cat "$out/shardtune-$1-$2.log" >&2; return 1; }
  python3 - "$out/run-zero$1/metrics.jsonl" "$warmup" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
timed = rows[int(sys.argv[2]):]
tps = statistics.median(r["tokens_per_s"] for r in timed)
cpu = [r["cpu"]["process"] for r in timed]
comm = [r["cpu"]["comm_thread"] if r["cpu"]["comm_thread"] is not None else -1 for r in timed]
print(tps, statistics.median(cpu), statistics.median(comm))
PY
}
peer_of() { case $1 in 0) echo ddp ;; 1|2) echo ddp_zero ;; 3) echo fsdp2 ;; esac; }
peer_run() {  # STAGE ROUND -> "tokens/s cpu_per_wall"
  local mode; mode=$(peer_of "$1")
  OMP_NUM_THREADS=1 "$venv/bin/python" "$here/benchmarks/peers/torch_train.py" "$out/gpt2" --mode "$mode" \
    --ranks "$ranks" --seq "$seq" --micro-batch "$mb" --global-batch "$gb" --steps "$steps" --warmup "$warmup" \
    --out "$out/peer-$1-$2.json" 2>"$out/peer-$1-$2.log" >/dev/null || { cat "$out/peer-$1-$2.log" >&2; return 1; }
  python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(j["tokens_per_s"], j["cpu_per_wall"])' \
    "$out/peer-$1-$2.json"
}

results=$out/results.txt
: >"$results"
for r in $(seq 1 "$rounds"); do
  for z in $stages; do
    s=$(shardtune_run "$z" "$r")
    p=$(peer_run "$z" "$r")
    echo "$z $s $p" >>"$results"
    printf 'round %d, ZeRO %d: shardtune %.1f tokens/s, %s %.1f tokens/s\n' "$r" "$z" "${s%% *}" "$(peer_of "$z")" "${p%% *}"
  done
done
python3 - "$results" <<PY
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    z, st, stc, stm, pt, ptc = line.split()
    rows.setdefault(z, []).append((float(st), float(stc), float(stm), float(pt), float(ptc)))
peer = {"0": "DDP", "1": "DDP + ZeroRedundancyOptimizer", "2": "DDP + ZeroRedundancyOptimizer", "3": "FSDP2"}
print(f"{ {'gpt2': 'GPT-2', 'llama': 'Llama', 'qwen3': 'Qwen3', 'gemma3': 'Gemma 3'}['$family'] } {$layers} layers, width {$width}, vocab {$vocab}, seq {$seq}, micro-batch {$mb}, global batch {$gb}, "
      f"{$ranks} ranks x 1 thread, float32; median of {len(next(iter(rows.values())))} rounds"
      + (", with one busy process per core" if "$load" == "1" else ""))
print("%-5s %15s %30s %11s %6s %15s %12s" % ("ZeRO", "shardtune tok/s", "peer", "peer tok/s", "ratio",
                                             "CPU/wall s, p", "comm thread"))
for z, rs in rows.items():
    st, stc, stm, pt, ptc = (statistics.median(r[i] for r in rs) for i in range(5))
    print("%-5s %15.1f %30s %11.1f %6.2f %9.2f, %.2f %12.2f" % (z, st, peer[z], pt, st / pt, stc, ptc, stm))
print("CPU/wall: CPU seconds per wall second of rank 0's process (shardtune, peer); comm thread: the part "
      "of shardtune's spent in its communication thread")
PY
echo "(machine load before: $(cut -d' ' -f1-3 /proc/loadavg))"
