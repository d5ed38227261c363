// Sharded, atomic, reshardable checkpoints.
//
//   <dir>/step_NNNNNNNN/
//     config.json, model.safetensors   rank 0: the full model, HF names (a
//                                      checkpoint is an HF model folder)
//     adapter_config.json,             rank 0, LoRA runs: the adapters in
//     adapter_model.safetensors        PEFT's layout
//     optim/rank_RRRRR.safetensors     each rank: master weights and Adam
//                                      moments of its piece of the flat index
//     trainer_state.json               rank 0: step, sampler, tokens, world
//                                      size, layout, the resolved config
//     DONE                             rank 0, after every rank has written
//
// The folder is written as step_NNNNNNNN.tmp and renamed once DONE is in it,
// so a folder without DONE (a crash mid-write) is never taken. The optimizer
// pieces are ranges of the world-size-independent flat index of trainable
// parameters (offset, length in each file's metadata); together they tile
// [0, num_params) once, so any world size and ZeRO stage can read back any
// range it needs. Loading reads safetensors and JSON only.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <functional>
#include <string>
#include <vector>

#include "shardtune/data/sampler.h"

namespace shardtune {

struct TrainerState {
  int64_t step = 0;  // optimizer steps taken
  SamplerState sampler;
  int64_t tokens_seen = 0;  // target tokens trained on
  int64_t world_size = 1;
  int64_t zero_stage = 0;
  int64_t global_batch = 0;
  int64_t seed = 0;
  int64_t num_params = 0;  // trainable elements (the flat index)
  std::string layout;      // layout_signature() of the trainable parameters
  bool lora = false;
  std::string config_yaml;  // the run's resolved config
};

// A hash of the trainable parameters' names and sizes in flat order: a
// checkpoint's optimizer state fits a model only if the signatures agree.
std::string layout_signature(const std::vector<std::string>& names, const std::vector<int64_t>& numels);

// "step_00000042".
std::string checkpoint_name(int64_t step);

// The complete checkpoints (step_N folders holding DONE) under dir, oldest
// first; none when dir does not exist.
std::vector<std::string> list_checkpoints(const std::string& dir);

// The newest complete checkpoint under dir, or "" when there is none.
std::string latest_checkpoint(const std::string& dir);

// Checks that path is a complete, readable checkpoint: DONE, a parseable
// trainer_state.json, the model files, one optimizer file per saved rank
// whose header is valid and whose pieces tile the flat index. Returns the
// trainer state; throws InputError "<path>: <what is wrong>".
TrainerState validate_checkpoint(const std::string& path);

// Reads ranges of the flat optimizer state back from a checkpoint's
// optimizer files, whatever world size wrote them.
class OptimStateReader {
 public:
  // Opens (and validates) every optim/rank_*.safetensors under path.
  explicit OptimStateReader(const std::string& path);
  ~OptimStateReader();
  OptimStateReader(const OptimStateReader&) = delete;
  OptimStateReader& operator=(const OptimStateReader&) = delete;

  struct Range {
    torch::Tensor master, exp_avg, exp_avg_sq;  // 1-D float32 on the CPU
  };
  // The state of [offset, offset + length); throws InputError if the files
  // do not cover it.
  Range read(int64_t offset, int64_t length) const;
  // Every trainable element's master weight (for export).
  torch::Tensor full_master() const { return read(0, num_params_).master; }
  int64_t num_params() const { return num_params_; }

 private:
  struct Piece;
  std::vector<std::unique_ptr<Piece>> pieces_;  // by offset
  int64_t num_params_ = 0;
};

// ---- Writing. The trainer drives the protocol:
//   tmp = begin (rank 0 makes it), barrier, every rank write_optim_piece,
//   rank 0 writes the model files and write_trainer_state, barrier,
//   rank 0 finish_checkpoint.

// <dir>/<checkpoint_name(step)>.tmp: where the checkpoint of step is written.
std::string checkpoint_tmp_path(const std::string& dir, int64_t step);

// Rank 0: makes checkpoint_tmp_path(dir, step)/optim (removing a stale one
// left by a crash) and returns the .tmp path.
std::string begin_checkpoint(const std::string& dir, int64_t step);

// Each rank: optim/rank_RRRRR.safetensors with its piece of the flat state.
void write_optim_piece(const std::string& tmp, int rank, int world, int64_t offset, const torch::Tensor& master,
                       const torch::Tensor& exp_avg, const torch::Tensor& exp_avg_sq, int64_t num_params,
                       const std::string& layout);

void write_trainer_state(const std::string& tmp, const TrainerState& state);

// Rank 0, once every rank's files are written: flushes them to disk, writes
// DONE, renames tmp to the final name, points <dir>/latest at it and deletes
// the complete checkpoints older than it beyond the keep - 1 newest (newer
// ones, left by another run, are never touched). Returns the final path.
// A deletion first renames the folder to step_N.deleting (which no reader
// takes), so a crash at any point leaves only complete checkpoints under
// their names; leftovers are removed by the next checkpoint. mid_delete, if
// set, is called between the rename and the removal (for fault tests).
std::string finish_checkpoint(const std::string& tmp, int64_t keep,
                              const std::function<void(const std::string&)>& mid_delete = {});

// Deletes a checkpoint folder crash-safely (rename to .deleting, then remove).
void delete_checkpoint(const std::string& path, const std::function<void(const std::string&)>& mid_delete = {});

// Every entry under dir a checkpoint run writes (step_N, step_N.tmp,
// step_N.deleting, latest), for a start that replaces them.
std::vector<std::string> checkpoint_entries(const std::string& dir);

TrainerState read_trainer_state(const std::string& path);

}  // namespace shardtune
