#!/usr/bin/env bash
# Training throughput at several world sizes, one config:
#   benchmarks/train/scaling.sh CONFIG [RANKS ...] [-- key=value ...]
# RANKS defaults to "1 2". For each world size W it runs `shardtune train`
# for STEPS steps (env, default 30; the last 10 timed) twice:
#   strong scaling: the config's global batch, split over W ranks
#   weak scaling:   global batch x W (the per-rank work stays the same)
# and prints tokens/s, speed-up, MFU and the step-time split of each, read
# from the runs' metrics files. Ranks start through scripts/mpirun.sh on
# one machine (use launch/mpirun.sh on a cluster: set LAUNCH).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
config=${1:?usage: scaling.sh CONFIG [RANKS ...] [-- key=value ...]}
shift
ranks=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do ranks+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#ranks[@]} -eq 0 ] && ranks=(1 2)
steps=${STEPS:-30}
st=${SHARDTUNE:-$here/build/shardtune}
launch=${LAUNCH:-bash $here/scripts/mpirun.sh}
out=${OUT_DIR:-$here/build/bench-train}
mkdir -p "$out"
base_batch=$("$st" config "$config" "$@" | sed -n 's/^  global_batch: \([0-9]*\).*/\1/p')

for mode in strong weak; do
  for w in "${ranks[@]}"; do
    batch=$base_batch
    [ "$mode" = weak ] && batch=$((base_batch * w))
    $launch -np "$w" "$st" train "$config" "$@" train.steps="$steps" data.global_batch="$batch" \
      log.every=10 log.progress=off eval.every=0 eval.at_start=false 'data.val=[]' checkpoint.at_end=false \
      checkpoint.resume=never train.output_dir="$out/$mode-np$w" >/dev/null 2>"$out/$mode-np$w.log" \
      || { cat "$out/$mode-np$w.log"; exit 1; }
  done
done

python3 - "$out" "${ranks[@]}" <<'PY'
import json, sys
out, ranks = sys.argv[1], [int(r) for r in sys.argv[2:]]
def last(mode, w):
    with open(f"{out}/{mode}-np{w}/metrics.jsonl") as f:
        return [json.loads(l) for l in f if '"train"' in l][-1]
for mode in ("strong", "weak"):
    base = last(mode, ranks[0])["tokens_per_s"]
    print(f"{mode} scaling")
    print(f"{'ranks':>5} {'tokens/s':>10} {'speed-up':>9} {'MFU':>6} {'step s':>7} {'data':>6} {'fwd+bwd':>8} "
          f"{'comm':>6} {'optim':>6}")
    for w in ranks:
        r = last(mode, w)
        t = r["time"]
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
        print(f"{w:>5} {r['tokens_per_s']:>10.0f} {r['tokens_per_s'] / base:>9.2f} {mfu:>6} {t['step']:>7.3f} "
              f"{t['data']:>6.3f} {t['fwd_bwd']:>8.3f} {t['comm']:>6.3f} {t['optim']:>6.3f}")
PY
