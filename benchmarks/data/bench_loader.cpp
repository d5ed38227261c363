// Loader throughput per rank: tokens/s that DataLoader delivers from token
// shards, with the sampler's shuffled order, under mpirun like training.
//
//   mpirun -np 2 shardtune_bench_loader --data PREFIX [--seq-len 1024] [--batch 16] [--steps 200] [--mode pack|sft]
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "shardtune/cli/rank_main.h"
#include "shardtune/core/error.h"
#include "shardtune/data/loader.h"

namespace shardtune {
namespace {

int run(DistContext& dist, const std::vector<std::string>& args) {
  std::string prefix;
  int64_t seq_len = 1024, batch = 16, steps = 200;
  std::string mode = "pack";
  for (size_t i = 0; i + 1 < args.size(); i += 2) {
    if (args[i] == "--data") prefix = args[i + 1];
    else if (args[i] == "--seq-len") seq_len = std::stoll(args[i + 1]);
    else if (args[i] == "--batch") batch = std::stoll(args[i + 1]);
    else if (args[i] == "--steps") steps = std::stoll(args[i + 1]);
    else if (args[i] == "--mode") mode = args[i + 1];
    else throw InputError(str_cat("unknown argument ", args[i]));
  }
  if (prefix.empty()) throw InputError("usage: shardtune_bench_loader --data PREFIX [--seq-len N] [--batch N] [--steps N] [--mode pack|sft]");
  auto ds = std::make_shared<TokenDataset>(find_shards(prefix, "train"),
                                           DatasetOptions{seq_len, parse_pack_mode(mode), 16});
  const int64_t global = batch * dist.world_size();
  DataLoader loader(ds, Sampler(ds->num_samples(), global, 1), dist.rank(), dist.world_size(), 4);
  MPI_Barrier(MPI_COMM_WORLD);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  for (int64_t s = 0; s < steps; ++s) tokens += loader.next().rows * seq_len;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double rate = static_cast<double>(tokens) / secs;
  std::vector<double> rates(static_cast<size_t>(dist.world_size()));
  MPI_Gather(&rate, 1, MPI_DOUBLE, rates.data(), 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  if (dist.rank() == 0) {
    std::printf("# loader: %s, %ld samples, seq_len %ld, %ld rows/rank/step, %ld steps, mode %s\n", prefix.c_str(),
                static_cast<long>(ds->num_samples()), static_cast<long>(seq_len), static_cast<long>(batch),
                static_cast<long>(steps), mode.c_str());
    std::printf("%6s %16s\n", "rank", "tokens/s");
    for (size_t r = 0; r < rates.size(); ++r) std::printf("%6zu %16.0f\n", r, rates[r]);
  }
  return kExitOk;
}

}  // namespace
}  // namespace shardtune

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  return shardtune::run_rank_main([&](shardtune::DistContext& dist) { return shardtune::run(dist, args); });
}
