// A loader Batch as torch tensors for the trainer.
#pragma once

#include <torch/types.h>

#include "shardtune/data/loader.h"

namespace shardtune {

struct TorchBatch {
  torch::Tensor input_ids;  // [rows, seq_len] int64
  torch::Tensor labels;     // [rows, seq_len] int64, -100 where there is no target
};

TorchBatch to_torch(const Batch& batch, torch::Device device = torch::kCPU);

}  // namespace shardtune
