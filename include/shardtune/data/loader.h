// The prefetching loader: a background thread reads this rank's samples for
// the next steps into a bounded queue while the trainer computes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "shardtune/data/dataset.h"
#include "shardtune/data/sampler.h"

namespace shardtune {

// This rank's micro-batch of one step.
struct Batch : SampleRows {
  std::vector<int64_t> samples;   // the global sample ids, for checks
  SamplerState state_after;       // the sampler's state once this batch is consumed
};

class DataLoader {
 public:
  // Serves rank's slice of each global batch of `sampler` (whose state says
  // where to start). prefetch bounds the batches read ahead.
  DataLoader(std::shared_ptr<TokenDataset> dataset, Sampler sampler, int rank, int world, int prefetch = 4);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch; rethrows what the reading thread threw (a bad shard).
  Batch next();

  // The sampler state after the batches next() has returned: what a
  // checkpoint saves (batches read ahead are not counted).
  SamplerState state() const { return consumed_; }

 private:
  void run();

  std::shared_ptr<TokenDataset> dataset_;
  Sampler sampler_;
  const int rank_, world_;
  const size_t prefetch_;
  SamplerState consumed_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace shardtune
