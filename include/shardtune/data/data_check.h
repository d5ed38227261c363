// `shardtune data check`: a chat JSONL file (OpenAI's fine-tuning format)
// checked before a fine-tune, as prep would read it. torch-free.
//
// Format problems are counted by kind with their line numbers. Errors are
// what prep refuses (the line is not UTF-8, not JSON, not an object; no
// `messages` list, a message that is not an object, a role other than
// system/user/assistant, content missing or neither a string nor text
// parts, a weight other than 0/1 or off an assistant message, a message key
// prep does not read, no assistant turn to train on); warnings are what
// prep accepts but is likely a mistake (top-level keys it ignores, an empty
// content, roles out of order, a conversation that does not end with the
// assistant, a duplicate of an earlier line).
//
// With a tokenizer the valid examples are rendered as prep renders them
// (chat template, loss mask): tokens and trained tokens per example (min,
// mean, p50, p90, p99, max), the share trained on, examples longer than a
// window (seq_len + 1 tokens, cut by sft packing) and than the model's
// context; with a batch, sft packing's windows, the steps and tokens per
// epoch.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "shardtune/tokenize/tokenizer.h"

namespace shardtune {

struct DataCheckOptions {
  std::string input;
  const Tokenizer* tokenizer = nullptr;  // none: the format checks only
  std::string chat_template;             // as prep's --chat-template; empty: the tokenizer's own
  bool train_on_all = false;
  int64_t seq_len = 0;        // 0: unknown
  int64_t model_context = 0;  // 0: unknown
  int64_t global_batch = 0;   // 0: unknown
};

struct TokenStats {
  int64_t count = 0;
  double min = 0, mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0, total = 0;
};

struct DataCheckResult {
  int64_t lines = 0;     // non-blank lines read
  int64_t examples = 0;  // lines without errors
  std::map<std::string, std::vector<int64_t>> errors, warnings;  // kind -> line numbers
  bool tokenized = false;
  std::vector<int64_t> tokens, trained;  // per valid example
  TokenStats token_stats, trained_stats;
  std::vector<int64_t> over_window, over_context;  // line numbers
  int64_t windows = 0, steps_per_epoch = 0, tokens_per_epoch = 0, trained_per_epoch = 0;
  std::string chat_template;  // the template rendered with

  bool ok() const { return errors.empty(); }
};

DataCheckResult check_chat_data(const DataCheckOptions& options);

// The report as text (what the command prints and writes).
std::string format_data_check(const DataCheckResult& r, const DataCheckOptions& options);
// The same as JSON (every line number).
std::string data_check_json(const DataCheckResult& r, const DataCheckOptions& options);

// Writes DIR/data_check.txt, DIR/data_check.json and, when gnuplot is on
// PATH, DIR/data_check.png (tokens per example, trained tokens per example,
// the window and the context marked); returns the PNG's path, or empty with
// `why` set when none was drawn.
std::string write_data_check(const DataCheckResult& r, const DataCheckOptions& options, const std::string& dir,
                             std::string& why);

}  // namespace shardtune
