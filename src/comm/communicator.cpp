#include "shardtune/comm/communicator.h"

#include <torch/cuda.h>

#include <cmath>

#include "shardtune/version.h"

namespace shardtune {

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

const char* to_string(CollectiveOp op) {
  switch (op) {
    case CollectiveOp::kAllReduce:
      return "all_reduce";
    case CollectiveOp::kReduceScatter:
      return "reduce_scatter";
    case CollectiveOp::kAllGather:
      return "all_gather";
    case CollectiveOp::kBroadcast:
      return "broadcast";
    case CollectiveOp::kBarrier:
      return "barrier";
  }
  return "?";
}

std::string dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float:
      return "float32";
    case c10::ScalarType::BFloat16:
      return "bfloat16";
    case c10::ScalarType::Half:
      return "float16";
    case c10::ScalarType::Double:
      return "float64";
    case c10::ScalarType::Long:
      return "int64";
    case c10::ScalarType::Int:
      return "int32";
    default:
      return c10::toString(dtype);
  }
}

ShardRange shard_range(int64_t count, int world, int rank) {
  ST_CHECK(world > 0 && rank >= 0 && rank < world && count >= 0, "shard_range(count=", count,
           ", world=", world, ", rank=", rank, ")");
  const int64_t base = count / world;
  const int64_t extra = count % world;
  ShardRange r;
  r.length = base + (rank < extra ? 1 : 0);
  r.offset = rank * base + std::min<int64_t>(rank, extra);
  return r;
}

CommOptions CommOptions::from_config(const CommConfig& config) {
  CommOptions options;
  options.timeout = std::chrono::milliseconds(
      static_cast<int64_t>(std::llround(config.timeout_s * 1000.0)));
  return options;
}

#if !SHARDTUNE_WITH_CUDA
std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions&, const DistInfo&) {
  throw CommError("comm.backend=nccl: this build of shardtune has no CUDA support "
                  "(configure with a CUDA libtorch and SHARDTUNE_WITH_CUDA=ON)");
}
#endif

bool nccl_available(const DistInfo& dist) {
  return kShardtuneWithCuda && dist.local_rank < static_cast<int>(torch::cuda::device_count());
}

std::unique_ptr<Communicator> make_communicator(const CommConfig& config, const DistInfo& dist) {
  const CommOptions options = CommOptions::from_config(config);
  std::unique_ptr<Communicator> comm = config.backend == "nccl"
                                           ? make_nccl_communicator(options, dist)
                                           : make_mpi_communicator(options);
  if (config.check_collectives) comm = make_checking_communicator(std::move(comm));
  return comm;
}

}  // namespace shardtune
