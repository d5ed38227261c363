#include "shardtune/cli/rank_main.h"

#include <torch/torch.h>

#include <cstdio>
#include <exception>

#include "shardtune/core/error.h"
#include "shardtune/metrics/log.h"

namespace shardtune {
namespace {

int fail(const DistContext& dist, const char* kind, const char* message, int code) {
  std::fprintf(stderr, "shardtune: %s on rank %d of %d: %s\n", kind, dist.rank(),
               dist.world_size(), message);
  std::fflush(stderr);
  std::fflush(stdout);
  if (dist.world_size() > 1) DistContext::abort_all(code);
  return code;
}

}  // namespace

int run_rank_main(const std::function<int(DistContext&)>& body) {
  std::unique_ptr<DistContext> dist;
  try {
    dist = std::make_unique<DistContext>();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shardtune: error: cannot start MPI: %s\n", e.what());
    return kExitFailure;
  }
  try {
    const int code = body(*dist);
    if (code != kExitOk) return fail(*dist, "exit", "non-zero exit code", code);
    return code;
  } catch (const InputError& e) {
    return fail(*dist, "error", e.what(), kExitBadInput);
  } catch (const c10::Error& e) {  // libtorch's message, without its C++ stack frames
    return fail(*dist, "error", e.what_without_backtrace(), kExitFailure);
  } catch (const std::exception& e) {
    return fail(*dist, "error", e.what(), kExitFailure);
  }
}

int setup_rank(const DistContext& dist, const Config& config) {
  log::init(dist.rank(), config.log);
  const int threads =
      intra_op_threads(static_cast<int>(config.dist.intra_op_threads), cores_on_node(),
                       cores_available(), dist.info().local_world_size);
  at::set_num_threads(threads);
  if (config.dist.retain_host_memory) retain_freed_host_memory();
  return threads;
}

}  // namespace shardtune
