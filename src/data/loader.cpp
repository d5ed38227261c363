#include "shardtune/data/loader.h"

#include <algorithm>

namespace shardtune {

DataLoader::DataLoader(std::shared_ptr<TokenDataset> dataset, Sampler sampler, int rank, int world, int prefetch)
    : dataset_(std::move(dataset)),
      sampler_(std::move(sampler)),
      rank_(rank),
      world_(world),
      prefetch_(static_cast<size_t>(std::max(1, prefetch))),
      consumed_(sampler_.state()) {
  // Checked here, on the caller's thread, so a bad batch size fails at once.
  Sampler::rank_slice(std::vector<int64_t>(static_cast<size_t>(sampler_.global_batch())), rank, world);
  thread_ = std::thread([this] { run(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void DataLoader::run() {
  try {
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || queue_.size() < prefetch_; });
        if (stop_) return;
      }
      Batch b;
      b.samples = Sampler::rank_slice(sampler_.next_global_batch(), rank_, world_);
      b.state_after = sampler_.state();
      const size_t n = b.samples.size() * static_cast<size_t>(dataset_->options().seq_len);
      b.inputs.reserve(n);
      b.targets.reserve(n);
      for (int64_t s : b.samples) dataset_->read_sample(s, b);
      {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(b));
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

Batch DataLoader::next() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty() || error_; });
  if (queue_.empty() && error_) std::rethrow_exception(error_);
  Batch b = std::move(queue_.front());
  queue_.pop_front();
  consumed_ = b.state_after;
  cv_.notify_all();
  return b;
}

}  // namespace shardtune
