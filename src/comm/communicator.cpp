#include "shardtune/comm/communicator.h"

#include "collective_checks.h"

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

namespace detail {

std::string CollectiveDesc::name() const {
  std::string s = str_cat(to_string(op), " #", seq);
  if (op == CollectiveOp::kBarrier) return s;
  s += " (";
  if (op == CollectiveOp::kAllReduce || op == CollectiveOp::kReduceScatter) {
    s += str_cat(to_string(reduce), ", ");
  }
  return s + str_cat(dtype_name(dtype), ", ", count, " elements)");
}

void check_tensor(const torch::Tensor& t, const torch::Device& device, const char* backend,
                  const char* op, const char* which) {
  if (!t.defined()) throw CommError(str_cat(op, ": ", which, " is undefined"));
  if (t.device() != device) {
    throw CommError(str_cat(op, ": the ", backend, " backend of this rank takes tensors on ",
                            device.str(), "; ", which, " is on ", t.device().str()));
  }
  if (!t.is_contiguous()) throw CommError(str_cat(op, ": ", which, " is not contiguous"));
  const auto dt = t.scalar_type();
  if (dt != torch::kFloat32 && dt != torch::kBFloat16 && dt != torch::kInt64) {
    throw CommError(str_cat(op, ": dtype ", dtype_name(dt), " of ", which,
                            " is not supported (float32, bfloat16, int64)"));
  }
}

void check_same_dtype(const torch::Tensor& input, const torch::Tensor& output, const char* op) {
  if (input.scalar_type() != output.scalar_type()) {
    throw CommError(str_cat(op, ": input is ", dtype_name(input.scalar_type()), " but output is ",
                            dtype_name(output.scalar_type())));
  }
}

void check_input_output(const torch::Tensor& input, const torch::Tensor& output, const torch::Device& device,
                        const char* backend, const char* op) {
  check_tensor(input, device, backend, op, "input");
  check_tensor(output, device, backend, op, "output");
  check_same_dtype(input, output, op);
}

void check_numel(const torch::Tensor& t, int64_t expected, const char* op, const char* which) {
  if (t.numel() != expected) {
    throw CommError(str_cat(op, ": ", which, " has ", t.numel(),
                            " elements, expected this rank's shard of ", expected));
  }
}

int64_t check_counts(const std::vector<int64_t>& counts, int world, int rank, int64_t total, const char* op) {
  if (static_cast<int>(counts.size()) != world) {
    throw CommError(str_cat(op, ": ", counts.size(), " counts for ", world, " ranks"));
  }
  int64_t sum = 0;
  for (int64_t c : counts) {
    if (c < 0) throw CommError(str_cat(op, ": a negative count"));
    sum += c;
  }
  if (sum != total) throw CommError(str_cat(op, ": counts sum to ", sum, ", the input holds ", total));
  return counts[static_cast<size_t>(rank)];
}

}  // namespace detail

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
