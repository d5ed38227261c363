// `shardtune prep`: example files to tokenized HDF5 shards.
//
// Inputs (one example per line, JSONL):
//   chat               {"messages": [{"role": "system|user|assistant", "content": "..."}]}
//   prompt_completion  {"prompt": "...", "completion": "..."}
//   text               {"text": "..."}
//   auto               each line by its fields
// and plain .txt files, whose documents are separated by blank lines.
//
// Loss masks: chat trains on the assistant turns only (train_on_all: every
// token), prompt_completion on the completion (and EOS), text on everything.
// Text and prompt_completion get BOS (when the tokenizer has one) and EOS.
// Each example goes to validation when a hash of its bytes falls under
// val_fraction, so the split is deterministic and independent of order and
// threads. Shards hold at most shard_tokens tokens (a longer example gets a
// shard of its own). Nothing appears under the output names until every shard
// is complete; a failed run leaves none of its files behind.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shardtune {

struct PrepOptions {
  std::string tokenizer = "byte";
  std::string format = "auto";
  std::vector<std::string> inputs;
  std::string output;  // prefix: <output>-train-00000.h5, <output>-val-00000.h5
  double val_fraction = 0.0;
  int64_t shard_tokens = 100'000'000;
  int threads = 0;  // 0 = the cores this process may use
  std::string chat_template;  // chatml, llama3, plain; empty: the tokenizer's own, else chatml
  bool train_on_all = false;
  bool skip_bad = false;
  bool overwrite = false;
  bool progress = false;  // a progress line on stderr (the CLI sets it on a terminal)
};

struct PrepSummary {
  int64_t examples[2] = {0, 0};  // train, val
  int64_t tokens[2] = {0, 0};
  int64_t targets[2] = {0, 0};   // tokens with loss mask 1
  int64_t skipped = 0;
  int64_t input_bytes = 0;
  double seconds = 0;
  std::vector<std::string> files;
  std::string tokenizer;    // "NAME (fingerprint)", as the shards record it
  std::string chat_format;  // the chat examples' format; empty when there were none
};

// Runs prep; throws InputError naming file:line for a bad line (unless
// skip_bad) and for bad options.
PrepSummary run_prep(const PrepOptions& options);

// The summary as a few lines of text.
std::string format_summary(const PrepSummary& s);

}  // namespace shardtune
