// Collective communication over tensors.
//
// Contract (every backend):
//  - Every rank issues the same collectives in the same order, with the same
//    op, dtype, element count and root. Set comm.check_collectives to have
//    the ranks verify this before each call (make_checking_communicator).
//  - Each call returns at once with a Work; the collective runs in the
//    background, in issue order. The caller must neither read nor write the
//    tensors passed in until wait() has returned; the Work keeps them alive.
//    (MPI runs a small all_reduce issued while nothing else is pending on the
//    caller's thread, and returns with it done: faster than a hand-off.)
//  - After Work::wait() returns, what the caller does next sees the result:
//    for CPU tensors (MPI) wait() blocks the host until the collective is
//    done; for CUDA tensors (NCCL) it orders the caller's current CUDA stream
//    after the collective without blocking the host (barrier blocks both).
//  - A collective that fails, or has not finished `timeout` after it was
//    issued, is reported with its name and sequence number: MPI throws
//    CommError from wait(); NCCL's watchdog thread prints the error and ends
//    every rank, since a GPU hang cannot be unwound, and so does MPI's for a
//    collective stuck on the caller's thread. After a failure the
//    communicator is broken and every later call throws at once.
//  - One thread issues collectives on a communicator (it is not thread-safe).
//  - Sizes for reduce_scatter and all_gather follow shard_range(): any
//    element count works, including counts not divisible by the world size.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "shardtune/config/config.h"
#include "shardtune/core/error.h"
#include "shardtune/dist/dist.h"

namespace shardtune {

enum class ReduceOp : int64_t { kSum = 1, kAvg = 2, kMax = 3 };

enum class CollectiveOp : int64_t {
  kAllReduce = 1,
  kReduceScatter = 2,
  kAllGather = 3,
  kBroadcast = 4,
  kBarrier = 5,
};

const char* to_string(ReduceOp op);
const char* to_string(CollectiveOp op);
// "float32", "bfloat16", "int64", ... (torch's Python names).
std::string dtype_name(c10::ScalarType dtype);

// A collective failed, timed out, or ranks disagreed on what to call.
class CommError : public Error {
 public:
  using Error::Error;
};

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective completes; throws CommError on failure.
  virtual void wait() = 0;
  // True once the collective has finished (successfully or not).
  virtual bool is_completed() = 0;
};
using WorkPtr = std::shared_ptr<Work>;

// A contiguous range [offset, offset + length) of a flat buffer.
struct ShardRange {
  int64_t offset = 0;
  int64_t length = 0;
};

// The balanced contiguous split of `count` elements over `world` ranks: rank r
// gets floor(count / world) elements, plus one if r < count % world. Ranks
// past the end of a short buffer get length 0.
ShardRange shard_range(int64_t count, int world, int rank);

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  // CPU seconds used so far by the backend's communication thread (-1 when
  // it has none): a thread that spins while it waits shows up here.
  virtual double thread_cpu_seconds() const { return -1.0; }

  // In place: every rank's `tensor` becomes the reduction over ranks. kAvg
  // divides the sum by size() (truncating toward zero for integer dtypes).
  virtual WorkPtr all_reduce(const torch::Tensor& tensor, ReduceOp op) = 0;

  // `input` holds n elements on every rank; `output` (shard_range(n).length
  // elements) gets this rank's range of the reduction over ranks.
  virtual WorkPtr reduce_scatter(const torch::Tensor& input, const torch::Tensor& output,
                                 ReduceOp op) = 0;

  // As reduce_scatter, with the split given: rank r gets counts[r] elements
  // (counts has size() entries summing to input's length; zeros allowed), in
  // rank order. For buckets that cross shard boundaries (ZeRO-2).
  virtual WorkPtr reduce_scatter_counts(const torch::Tensor& input, const torch::Tensor& output,
                                        const std::vector<int64_t>& counts, ReduceOp op) = 0;

  // `output` holds n elements; `input` holds this rank's range of them
  // (shard_range(n).length elements). Every rank's output becomes the
  // concatenation of all ranks' inputs. `input` may be the view of `output`
  // at this rank's range (in place).
  virtual WorkPtr all_gather(const torch::Tensor& input, const torch::Tensor& output) = 0;

  // As all_gather, with the split given: rank r contributes counts[r]
  // elements (zeros allowed), placed in rank order. For units of parameters
  // that cross shard boundaries (ZeRO-3).
  virtual WorkPtr all_gather_counts(const torch::Tensor& input, const torch::Tensor& output,
                                    const std::vector<int64_t>& counts) = 0;

  // In place: every rank's `tensor` becomes root's.
  virtual WorkPtr broadcast(const torch::Tensor& tensor, int root) = 0;

  virtual WorkPtr barrier() = 0;
};

struct CommOptions {
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};

  static CommOptions from_config(const CommConfig& config);
};

// The MPI backend: contiguous CPU tensors of float32, bfloat16 and int64.
// Collectives run in issue order on a dedicated thread, so they overlap with
// the caller's compute. Needs a live DistContext; destroy it before that.
std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& options);

// Wraps `inner` so that before each collective the ranks exchange what they
// are about to call (op, reduce op, dtype, element count, root, call number);
// if any differ, every rank throws CommError naming what each rank called.
// Costs one small extra collective, waited for, per call: a debugging aid.
std::unique_ptr<Communicator> make_checking_communicator(std::unique_ptr<Communicator> inner);

// The NCCL backend: contiguous CUDA tensors of float32, bfloat16 and int64 on
// this rank's device, cuda:<local rank>. Rank 0 makes the NCCL unique id and
// MPI broadcasts it, so it needs a live DistContext. Throws CommError when
// the build has no CUDA support or the node has too few GPUs.
std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions& options,
                                                     const DistInfo& dist);

// True when this build has the NCCL backend and this rank has a GPU for it.
bool nccl_available(const DistInfo& dist);

// The communicator the config asks for (backend, timeout, checking mode).
// "auto" is MPI: the trainer asks for NCCL explicitly when it trains on GPUs.
std::unique_ptr<Communicator> make_communicator(const CommConfig& config, const DistInfo& dist);

}  // namespace shardtune
