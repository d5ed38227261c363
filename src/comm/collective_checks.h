// What the communicator backends share: the description of a collective that
// names it in errors, and the argument checks every backend makes before it
// issues anything (so bad arguments fail identically on every rank).
#pragma once

#include <string>

#include "shardtune/comm/communicator.h"

namespace shardtune::detail {

struct CollectiveDesc {
  CollectiveOp op = CollectiveOp::kBarrier;
  ReduceOp reduce = ReduceOp::kSum;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  int64_t count = 0;
  uint64_t seq = 0;

  // "all_reduce #17 (sum, float32, 1048579 elements)"
  std::string name() const;
};

// t is defined, on `device`, contiguous, and float32, bfloat16 or int64.
void check_tensor(const torch::Tensor& t, const torch::Device& device, const char* backend,
                  const char* op, const char* which);
void check_same_dtype(const torch::Tensor& input, const torch::Tensor& output, const char* op);
// check_tensor on both, and check_same_dtype.
void check_input_output(const torch::Tensor& input, const torch::Tensor& output, const torch::Device& device,
                        const char* backend, const char* op);
// t holds this rank's shard of `expected` elements.
void check_numel(const torch::Tensor& t, int64_t expected, const char* op, const char* which);

// counts has one entry per rank, none negative, summing to total; returns
// this rank's entry.
int64_t check_counts(const std::vector<int64_t>& counts, int world, int rank, int64_t total, const char* op);

}  // namespace shardtune::detail
