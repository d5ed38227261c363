#include "shardtune/data/torch_batch.h"

namespace shardtune {

TorchBatch to_torch(const Batch& b, torch::Device device) {
  auto as_tensor = [&](const std::vector<int32_t>& v) {
    return torch::from_blob(const_cast<int32_t*>(v.data()), {b.rows, b.seq_len}, torch::kInt32)
        .to(torch::kInt64)
        .to(device);
  };
  return {as_tensor(b.inputs), as_tensor(b.targets)};
}

}  // namespace shardtune
