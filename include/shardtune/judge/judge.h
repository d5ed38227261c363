// `shardtune eval --generate`: held-out chat examples answered by several
// arms (models, zero- or few-shot) and scored against the reference answer.
//
// Each line of the held-out file is a chat example. One that ends with an
// assistant message is scored against it, the conversation before it the
// prompt; one that ends with the user's message is answered as it is and
// compared with the first arm's answer (agreement with the baseline). A
// second file of general, non-task prompts (--general) is answered by every
// arm too and scored on its own, so a report shows beside the task score
// what a fine-tune kept of the base model's other answers. An arm renders the prompt with its tokenizer's chat template (a
// few-shot arm first puts K training conversations before it, the same K
// for every example, picked by seed), generates (greedy unless sampling is
// asked for), and stops at the template's end of turn or EOS. The examples
// are split over the ranks (example i on rank i mod W), so W ranks give the
// answers one rank gives. Rank 0 scores them (text_metrics.h), and writes
// examples.jsonl, summary.json, report.md and a chart (gnuplot) to the
// output folder: per arm the mean of every metric with its 95% bootstrap
// interval, the mean prompt and answer tokens and the latency, and the
// difference from the first arm in the main metric with its interval.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shardtune/dist/dist.h"
#include "shardtune/model/generate.h"

namespace shardtune {

struct JudgeOptions {
  std::string heldout;
  std::string general;                  // general prompts, scored apart; empty: none
  std::string general_metric = "chrf";  // their main metric
  std::vector<std::string> models;  // HF folders or .gguf files; the first is the baseline
  std::string tokenizer;            // for every arm; empty: each model's own
  std::string chat_template;        // empty: each tokenizer's own (a tokenizer without one is refused)
  int64_t few_shot = 0;             // > 0: a few-shot arm of the first model after its zero-shot one
  std::string few_shot_from;        // chat JSONL the shots come from
  uint64_t shot_seed = 0;
  SamplingOptions sampling;         // eos ids are each arm's own
  std::string metric = "normalized";  // the main metric (text_metric_names())
  std::string regex;                // the regex metric's pattern, if any
  std::string output_dir;
  int64_t limit = 0;                // score the first N examples only; 0: all
  int64_t batch_size = 8;           // prompts generated together (generate_batch)
  bool require_better = false;      // exit 1 unless the last arm beats the first (interval above 0)
  std::string device = "cpu", dtype = "float32";
};

// Runs every arm; returns the exit code (0, or 1 when require_better fails).
// Throws InputError for bad input, naming the file and line.
int run_judge(const JudgeOptions& options, DistContext& dist);

}  // namespace shardtune
