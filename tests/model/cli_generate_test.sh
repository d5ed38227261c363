#!/usr/bin/env bash
# shardtune generate on the folders hf_parity.py saved: greedy output equals
# model_tool's (which checks cache == no cache), and bad input fails with
# exit code 2 and a message.
set -euo pipefail
shardtune=$1; tool=$2; work=$3
model="$work/llama_gqa"
[ -d "$model" ] || { echo "no $model: run the model_hf_parity test first"; exit 1; }
out=$("$shardtune" generate --model "$model" --prompt-ids 5,17,33 --max-new-tokens 8)
nocache=$("$shardtune" generate --model "$model" --prompt-ids 5,17,33 --max-new-tokens 8 --no-cache)
echo "generated: $out"
[ "$out" = "$nocache" ] || { echo "FAIL: cache $out != no cache $nocache"; exit 1; }
[ "$(echo "$out" | tr ',' '\n' | wc -l)" -eq 8 ] || { echo "FAIL: not 8 tokens"; exit 1; }
sampled=$("$shardtune" generate --model "$model" --prompt-ids 5,17,33 --max-new-tokens 8 --temperature 0.8 --top-k 20 --top-p 0.9 --seed 3)
again=$("$shardtune" generate --model "$model" --prompt-ids 5,17,33 --max-new-tokens 8 --temperature 0.8 --top-k 20 --top-p 0.9 --seed 3)
[ "$sampled" = "$again" ] || { echo "FAIL: same seed, different samples"; exit 1; }
set +e
msg=$("$shardtune" generate --model "$model" --prompt-ids 5,999 2>&1); rc=$?
set -e
echo "$msg"
[ $rc -eq 2 ] && echo "$msg" | grep -q "token id 999 is outside the vocabulary (size 97)" \
  || { echo "FAIL: expected exit 2 naming the bad id, got $rc"; exit 1; }
echo PASS
