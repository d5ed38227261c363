#!/usr/bin/env bash
# The from-scratch example (the README main job is scripts/demo.sh), end to
# end on this machine's CPU with 2 MPI ranks:
#   set up and build; make datasets from English text in Debian packages
#   (the Debian FAQ, fortunes, bsdgames' quiz facts); pretrain a small GPT
#   from scratch; fine-tune it on a chat set of questions and answers with
#   ZeRO stage 2; print the validation loss before and after; export an HF
#   folder; answer held-out questions; plot the loss curves.
# Everything it writes goes under build/demo/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
bash scripts/build.sh
built=$(date +%s)

st=build/shardtune
run() { bash scripts/mpirun.sh -np 2 "$st" "$@"; }
out=build/demo
rm -rf "$out"
mkdir -p "$out/data"

echo; echo "== datasets from Debian's text"
python3 scripts/make_demo_data.py "$out/data"
"$st" prep --tokenizer byte --input "$out/data/pretrain.jsonl" --output "$out/data/pretrain" \
  --val-fraction 0.03 | tail -n 3
"$st" prep --tokenizer byte --chat-template chatml --input "$out/data/chat.jsonl" --output "$out/data/chat" \
  --val-fraction 0.08 | tail -n 3

echo; echo "== pretraining a small GPT on 2 ranks (configs/demo-pretrain.yaml)"
run train configs/demo-pretrain.yaml log.progress=off | tee "$out/pretrain.txt"
run export --checkpoint "$out/pretrain/checkpoints/latest" --output "$out/pretrained"

echo; echo "== fine-tuning on the chat set with ZeRO stage 2 on 2 ranks (configs/demo-sft.yaml)"
run train configs/demo-sft.yaml log.progress=off | tee "$out/sft.txt"
run export --checkpoint "$out/sft/checkpoints/latest" --output "$out/model"

echo; echo "== held-out questions (never asked during fine-tuning; their facts were in the pretraining text)"
python3 - "$out/data/heldout.jsonl" >"$out/heldout.tsv" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)["messages"]
    print(m[0]["content"] + "\t" + m[1]["content"])
EOF
right=0; total=0
while IFS=$'\t' read -r question expected; do
  answer=$("$st" generate --model "$out/model" --tokenizer byte --chat --prompt "$question" --max-new-tokens 60)
  total=$((total + 1))
  [[ "$answer" == "$expected" ]] && right=$((right + 1))
  printf '  Q: %s\n  A: %s\n     (expected: %s)\n' "$question" "$answer" "$expected"
done <"$out/heldout.tsv"

echo; echo "== loss curves"
python3 scripts/plot_metrics.py "$out/pretrain/metrics.jsonl" "$out/pretrain_loss.png" --title "demo: pretraining"
python3 scripts/plot_metrics.py "$out/sft/metrics.jsonl" "$out/sft_loss.png" --title "demo: fine-tuning (ZeRO 2)"

end=$(date +%s)
before=$(sed -n 's/^validation loss: \([0-9.]*\) at step 0 -> \([0-9.]*\).*/\1/p' "$out/sft.txt")
after=$(sed -n 's/^validation loss: \([0-9.]*\) at step 0 -> \([0-9.]*\).*/\2/p' "$out/sft.txt")
cat <<EOF

== demo: done in $((end - built)) s after a $((built - start)) s set-up and build
  chat validation loss:  $before before fine-tuning -> $after after
  held-out answers exactly right: $right of $total
  datasets:          $out/data/{pretrain,chat}.jsonl, token shards $out/data/*.h5
  pretraining:       $out/pretrain/ (metrics.jsonl, checkpoints/), exported to $out/pretrained/
  fine-tuning:       $out/sft/ (metrics.jsonl, checkpoints/)
  fine-tuned model:  $out/model/ (config.json + model.safetensors, loads in transformers)
  loss curves:       $out/pretrain_loss.png, $out/sft_loss.png
  try it:            $st generate --model $out/model --tokenizer byte --chat --prompt "What is the capital of Peru?"
EOF
