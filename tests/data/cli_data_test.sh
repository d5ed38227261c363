#!/usr/bin/env bash
# shardtune prep and inspect from the command line, and shards written by
# another tool (h5py: gzip-compressed, uint32, no mask) read by shardtune.
#   cli_data_test.sh SHARDTUNE PYTHON WORKDIR
set -euo pipefail
st=$1; python=$2; work=$3
rm -rf "$work"; mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }

printf '%s\n' '{"messages":[{"role":"user","content":"2+2?"},{"role":"assistant","content":"4"}]}' \
  '{"prompt":"Say hi","completion":" hi"}' '{"text":"plain words"}' > "$work/ok.jsonl"
"$st" prep --tokenizer byte --input "$work/ok.jsonl" --output "$work/ok" | tee "$work/prep.out"
grep -q "train: 3 examples" "$work/prep.out" || fail "prep summary"
"$st" inspect "$work/ok-train-00000.h5" --tokenizer byte | tee "$work/inspect.out"
grep -q "3 documents" "$work/inspect.out" || fail "inspect counts"
grep -q "<|im_start|>user" "$work/inspect.out" || fail "inspect decoding"

# A bad line: exit code 2, file:line in the message, nothing written.
printf '%s\n' '{"text":"fine"}' '{"messages":[{"role":"robot","content":"x"}]}' > "$work/bad.jsonl"
set +e
msg=$("$st" prep --tokenizer byte --input "$work/bad.jsonl" --output "$work/bad" 2>&1); rc=$?
set -e
echo "$msg"
[ $rc -eq 2 ] || fail "bad line gave exit $rc, expected 2"
echo "$msg" | grep -q "bad.jsonl:2: message 0 has role 'robot'" || fail "message"
ls "$work"/bad-* 2>/dev/null && fail "a failed prep left files"

# Written by h5py: read, and a token id past the vocabulary rejected.
"$python" - "$work" <<'PY'
import sys, h5py, numpy as np
def shard(path, tokens, vocab):
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "shardtune.tokens"; f.attrs["version"] = 1; f.attrs["vocab_size"] = vocab
        f.attrs["bos_id"] = -1; f.attrs["eos_id"] = 1; f.attrs["pad_id"] = 0; f.attrs["tokenizer"] = "h5py:test"
        f.create_dataset("tokens", data=np.array(tokens, dtype=np.uint32), chunks=(2,), compression="gzip")
        f.create_dataset("doc_offsets", data=np.array([0, 2, len(tokens)], dtype=np.int64))
shard(sys.argv[1] + "/h5py-train-00000.h5", [5, 6, 7, 8, 9], 100000)
shard(sys.argv[1] + "/h5pybad-train-00000.h5", [5, 6, 100000, 8], 100000)
PY
"$st" inspect "$work/h5py-train-00000.h5" | tee "$work/h5py.out"
grep -q "2 documents, 5 tokens (uint32), loss mask absent" "$work/h5py.out" || fail "h5py shard"
set +e
msg=$("$st" inspect "$work/h5pybad-train-00000.h5" 2>&1); rc=$?
set -e
echo "$msg"
[ $rc -eq 2 ] && echo "$msg" | grep -q "token id 100000 at /tokens\[2\] is not below vocab_size 100000" || fail "bad h5py shard"
echo PASS
