#include "shardtune/data/torch_batch.h"

namespace shardtune {

TorchBatch to_torch(const SampleRows& b, torch::Device device) {
  auto as_tensor = [&](const std::vector<int32_t>& v) {
    return torch::from_blob(const_cast<int32_t*>(v.data()), {b.rows, b.seq_len}, torch::kInt32)
        .to(torch::kInt64)
        .to(device);
  };
  TorchBatch out{as_tensor(b.inputs), as_tensor(b.targets), torch::Tensor()};
  std::vector<int64_t> scored;
  for (size_t i = 0; i < b.targets.size(); ++i) {
    if (b.targets[i] != kIgnoreIndex) scored.push_back(static_cast<int64_t>(i));
  }
  if (scored.size() < b.targets.size()) out.scored_rows = torch::tensor(scored, torch::kInt64).to(device);
  if (!b.documents.empty()) out.documents = Documents{as_tensor(b.documents), as_tensor(b.positions)};
  return out;
}

}  // namespace shardtune
