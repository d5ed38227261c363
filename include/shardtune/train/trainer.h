// The trainer: `shardtune train`, `eval` and `export`.
//
// train() reads like its description:
//   build (or resume) the model, the data and the engine;
//   until train.steps: one optimizer step (micro-steps with accumulation,
//   clipping, AdamW, the schedule), log, maybe evaluate, maybe checkpoint;
//   SIGTERM or SIGUSR1 on any rank: every rank saves at the next step
//   boundary and returns normally (exit 0).
//
// Loss: each step's loss is the mean over every target token of the global
// batch (all ranks, all micro-steps), so a step's gradient does not depend on
// how the batch is split over ranks and micro-steps.
//
// Every function here is a collective: every rank calls it with the same
// config. Errors are exceptions (InputError for bad input).
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <torch/types.h>

#include "shardtune/config/config.h"
#include "shardtune/dist/dist.h"
#include "shardtune/model/transformer.h"

namespace shardtune {

struct TrainSummary {
  int64_t first_step = 0;  // the step the run started (or resumed) at
  int64_t last_step = 0;   // optimizer steps done when it ended
  bool preempted = false;  // ended by a signal, after saving
  double val_loss_first = std::numeric_limits<double>::quiet_NaN();  // eval.at_start's, if any
  double val_loss_last = std::numeric_limits<double>::quiet_NaN();   // the last evaluation's
  int64_t val_step_last = -1;                                         // and its step
  std::string checkpoint;  // the last checkpoint written ("" if none)
  std::string metrics_file;
  double seconds = 0.0;
};

TrainSummary train(const Config& config, DistContext& dist);

// Catches SIGTERM and SIGUSR1 from now until the process ends, so that one
// arriving while the ranks start up (MPI, config, model) is not fatal:
// train() then acts on it at its first step boundary. Without this call,
// train() catches them only while it runs. `shardtune train` calls it first.
void catch_stop_signals();

struct EvalResult {
  double loss = 0.0;        // mean over target tokens
  double perplexity = 0.0;  // exp(loss)
  int64_t tokens = 0;
  int64_t samples = 0;
};

// The validation loss of a checkpoint on config's data.val, as train()
// computes it; rank 0 also appends an eval record to the metrics file.
EvalResult evaluate_checkpoint(const Config& config, DistContext& dist, const std::string& checkpoint);

// Writes a checkpoint's model as an HF folder: LoRA merged into the weights,
// or (adapter) the PEFT adapter alone; the checkpoint's tokenizer files go
// along. dtype: "" keeps the checkpoint's. An output ending in .gguf gets a
// GGUF file (LoRA merged) with 2-D weights as gguf_type (f32 when empty).
void export_checkpoint(const std::string& checkpoint, const std::string& output, bool adapter,
                       const std::string& dtype, bool overwrite, const std::string& gguf_type = "");

// The model a checkpoint holds (LoRA adapters attached when it has them),
// float32 on the CPU unless said otherwise.
std::shared_ptr<CausalLM> load_checkpoint_model(const std::string& checkpoint, torch::Dtype dtype = torch::kFloat32,
                                                torch::Device device = torch::kCPU);

// Paths of the files the patterns name (glob patterns expanded, sorted);
// throws InputError naming `key` and a pattern that matches nothing.
std::vector<std::string> expand_data_paths(const std::vector<std::string>& patterns, const std::string& key);

}  // namespace shardtune
