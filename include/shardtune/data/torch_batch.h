// A loader Batch as torch tensors for the trainer.
#pragma once

#include <torch/types.h>

#include <optional>

#include "shardtune/data/dataset.h"
#include "shardtune/model/transformer.h"

namespace shardtune {

struct TorchBatch {
  torch::Tensor input_ids;  // [rows, seq_len] int64
  torch::Tensor labels;     // [rows, seq_len] int64, -100 where there is no target
  // Flat positions (row * seq_len + column) that have a target, int64;
  // undefined when every position has one. Made on the host, so a loss can
  // pick them on a GPU without a device sync.
  torch::Tensor scored_rows;
  // With document masking: the rows' packed documents; undefined otherwise.
  std::optional<Documents> documents;
};

TorchBatch to_torch(const SampleRows& batch, torch::Device device = torch::kCPU);

}  // namespace shardtune
