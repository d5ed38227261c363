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

# Text in, text out: a tiny random model over the byte tokenizer's 260 ids.
python=${4:-python3}
"$python" - "$work/byte_llama" <<'PY'
import sys, torch, transformers
torch.manual_seed(0)
cfg = transformers.LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                               eos_token_id=256)
transformers.LlamaForCausalLM(cfg).save_pretrained(sys.argv[1])
PY
# Random weights give arbitrary bytes, so the outputs are compared as hex.
text=$("$shardtune" generate --model "$work/byte_llama" --tokenizer byte --prompt "Hi there" --max-new-tokens 6 | od -An -tx1 | tr -d ' \n')
# The same prompt as ids (the byte tokenizer's ids are the bytes) gives the same tokens.
ids=$("$shardtune" generate --model "$work/byte_llama" --prompt-ids 72,105,32,116,104,101,114,101 --max-new-tokens 6)
decoded=$(python3 -c "import sys; print(''.join('%02x' % int(x) for x in sys.argv[1].split(',') if int(x) < 256) + '0a')" "$ids")
echo "text (hex): $text ids: $ids"
[ "$text" = "$decoded" ] || { echo "FAIL: --prompt gave $text, --prompt-ids decode to $decoded"; exit 1; }
chat=$("$shardtune" generate --model "$work/byte_llama" --tokenizer byte --chat --system "Be brief." --prompt "Hi" --max-new-tokens 4)
echo "chat: $(printf '%s' "$chat" | od -An -tx1 | head -1)"
echo PASS
