// The NCCL backend of Communicator (CUDA tensors).
//
// Ordering without host synchronisation: each collective records an event on
// the caller's current CUDA stream and makes the communicator's own stream
// wait on it, then runs there; Work::wait() makes the caller's current stream
// wait on the collective's completion event. The host never blocks on the hot
// path; compute on the caller's stream overlaps with communication.
//
// Hangs and errors: NCCL calls return at once, so a collective that never
// completes is found by a watchdog thread that polls the completion events
// and ncclCommGetAsyncError. On a timeout or an asynchronous error it prints
// the collective's name and sequence number and, for a timeout, which ranks
// never issued it (asked through the status board, as the MPI backend
// does), aborts the NCCL communicator and ends every rank (MPI_Abort): the
// alternative is a job hung for ever.

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

#include "shardtune/comm/communicator.h"
#include "collective_checks.h"
#include "status_board.h"
#include "shardtune/dist/dist.h"

namespace shardtune {
namespace {

using detail::check_numel;
using detail::CollectiveDesc;

using Clock = std::chrono::steady_clock;

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw CommError(str_cat(what, ": ", ncclGetErrorString(r)));
}

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw CommError(str_cat(what, ": ", cudaGetErrorString(e)));
}

// A CUDA event owned by both the Work and the watchdog.
struct Event {
  Event() { check_cuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate"); }
  ~Event() { cudaEventDestroy(event); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t event = nullptr;
};

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<Event> done, bool host_wait)
      : done_(std::move(done)), host_wait_(host_wait) {}

  // Orders the caller's current stream after the collective (the host does
  // not block), or, for barrier, blocks the host until it is done.
  void wait() override {
    if (host_wait_) {
      check_cuda(cudaEventSynchronize(done_->event), "cudaEventSynchronize");
      return;
    }
    check_cuda(cudaStreamWaitEvent(at::cuda::getCurrentCUDAStream().stream(), done_->event, 0),
               "cudaStreamWaitEvent");
  }

  bool is_completed() override { return cudaEventQuery(done_->event) == cudaSuccess; }

 private:
  std::shared_ptr<Event> done_;
  bool host_wait_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const CommOptions& options, const DistInfo& dist)
      : options_(options), rank_(dist.rank), size_(dist.world_size) {
    const int devices = static_cast<int>(torch::cuda::device_count());
    if (dist.local_rank >= devices) {
      throw CommError(str_cat("nccl: rank ", rank_, " is local rank ", dist.local_rank,
                              " but this node has ", devices,
                              " CUDA device(s); run one rank per GPU"));
    }
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(dist.local_rank));
    c10::cuda::set_device(device_.index());
    // Rank 0 makes the unique id; MPI carries it to the others.
    ncclUniqueId id;
    if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    if (MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
      throw CommError("nccl: broadcasting the NCCL unique id over MPI failed");
    }
    check_nccl(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
    stream_ = std::make_unique<c10::cuda::CUDAStream>(
        c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device_.index()));
    if (size_ > 1) board_ = std::make_unique<detail::StatusBoard>(MPI_COMM_WORLD, rank_, size_);
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    watchdog_.join();
    board_.reset();  // its thread makes no MPI call after this
    if (comm_ != nullptr) {
      cudaStreamSynchronize(stream_->stream());
      ncclCommDestroy(comm_);
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  WorkPtr all_reduce(const torch::Tensor& tensor, ReduceOp op) override {
    check_tensor(tensor, "all_reduce", "tensor");
    const int64_t n = tensor.numel();
    return launch(CollectiveDesc{CollectiveOp::kAllReduce, op, tensor.scalar_type(), n, 0}, {tensor}, [&] {
      check_nccl(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(n),
                               nccl_type(tensor), nccl_op(tensor, op), comm_, stream()),
                 "ncclAllReduce");
      finish_avg(tensor, op);
    });
  }

  WorkPtr reduce_scatter(const torch::Tensor& input, const torch::Tensor& output,
                         ReduceOp op) override {
    detail::check_input_output(input, output, device_, "NCCL", "reduce_scatter");
    const int64_t n = input.numel();
    check_numel(output, shard_range(n, size_, rank_).length, "reduce_scatter", "output");
    return launch(CollectiveDesc{CollectiveOp::kReduceScatter, op, input.scalar_type(), n, 0}, {input, output},
                  [&] {
                    if (n % size_ == 0) {
                      check_nccl(ncclReduceScatter(input.data_ptr(), output.data_ptr(),
                                                   static_cast<size_t>(n / size_),
                                                   nccl_type(input), nccl_op(input, op), comm_,
                                                   stream()),
                                 "ncclReduceScatter");
                    } else {
                      // Unequal shards: one grouped reduce per owner.
                      const size_t elem = input.element_size();
                      check_nccl(ncclGroupStart(), "ncclGroupStart");
                      for (int r = 0; r < size_; ++r) {
                        const ShardRange s = shard_range(n, size_, r);
                        check_nccl(ncclReduce(static_cast<char*>(input.data_ptr()) + s.offset * elem,
                                              output.data_ptr(), static_cast<size_t>(s.length),
                                              nccl_type(input), nccl_op(input, op), r, comm_,
                                              stream()),
                                   "ncclReduce");
                      }
                      check_nccl(ncclGroupEnd(), "ncclGroupEnd");
                    }
                    finish_avg(output, op);
                  });
  }

  WorkPtr reduce_scatter_counts(const torch::Tensor& input, const torch::Tensor& output,
                                const std::vector<int64_t>& counts, ReduceOp op) override {
    detail::check_input_output(input, output, device_, "NCCL", "reduce_scatter");
    const int64_t n = input.numel();
    check_numel(output, detail::check_counts(counts, size_, rank_, n, "reduce_scatter"), "reduce_scatter", "output");
    return launch(CollectiveDesc{CollectiveOp::kReduceScatter, op, input.scalar_type(), n, 0}, {input, output}, [&] {
      // One grouped reduce per owner of a non-empty piece.
      const size_t elem = input.element_size();
      int64_t offset = 0;
      check_nccl(ncclGroupStart(), "ncclGroupStart");
      for (int r = 0; r < size_; ++r) {
        const int64_t c = counts[static_cast<size_t>(r)];
        if (c > 0) {
          check_nccl(ncclReduce(static_cast<char*>(input.data_ptr()) + offset * elem, output.data_ptr(),
                                static_cast<size_t>(c), nccl_type(input), nccl_op(input, op), r, comm_, stream()),
                     "ncclReduce");
        }
        offset += c;
      }
      check_nccl(ncclGroupEnd(), "ncclGroupEnd");
      finish_avg(output, op);
    });
  }

  WorkPtr all_gather(const torch::Tensor& input, const torch::Tensor& output) override {
    detail::check_input_output(input, output, device_, "NCCL", "all_gather");
    const int64_t n = output.numel();
    check_numel(input, shard_range(n, size_, rank_).length, "all_gather", "input");
    return launch(CollectiveDesc{CollectiveOp::kAllGather, ReduceOp::kSum, output.scalar_type(), n, 0},
                  {input, output}, [&] {
                    const size_t elem = output.element_size();
                    if (n % size_ == 0) {
                      check_nccl(ncclAllGather(input.data_ptr(), output.data_ptr(),
                                               static_cast<size_t>(n / size_), nccl_type(input),
                                               comm_, stream()),
                                 "ncclAllGather");
                      return;
                    }
                    // Unequal shards: one grouped broadcast per owner.
                    check_nccl(ncclGroupStart(), "ncclGroupStart");
                    for (int r = 0; r < size_; ++r) {
                      const ShardRange s = shard_range(n, size_, r);
                      check_nccl(ncclBroadcast(input.data_ptr(),
                                               static_cast<char*>(output.data_ptr()) + s.offset * elem,
                                               static_cast<size_t>(s.length), nccl_type(output), r,
                                               comm_, stream()),
                                 "ncclBroadcast");
                    }
                    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
                  });
  }

  WorkPtr all_gather_counts(const torch::Tensor& input, const torch::Tensor& output,
                            const std::vector<int64_t>& counts) override {
    detail::check_input_output(input, output, device_, "NCCL", "all_gather");
    const int64_t n = output.numel();
    check_numel(input, detail::check_counts(counts, size_, rank_, n, "all_gather"), "all_gather", "input");
    return launch(CollectiveDesc{CollectiveOp::kAllGather, ReduceOp::kSum, output.scalar_type(), n, 0},
                  {input, output}, [&] {
                    // One grouped broadcast per rank with a non-empty piece.
                    const size_t elem = output.element_size();
                    int64_t offset = 0;
                    check_nccl(ncclGroupStart(), "ncclGroupStart");
                    for (int r = 0; r < size_; ++r) {
                      const int64_t c = counts[static_cast<size_t>(r)];
                      if (c > 0) {
                        check_nccl(ncclBroadcast(input.data_ptr(), static_cast<char*>(output.data_ptr()) + offset * elem,
                                                 static_cast<size_t>(c), nccl_type(output), r, comm_, stream()),
                                   "ncclBroadcast");
                      }
                      offset += c;
                    }
                    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
                  });
  }

  WorkPtr broadcast(const torch::Tensor& tensor, int root) override {
    check_tensor(tensor, "broadcast", "tensor");
    if (root < 0 || root >= size_) {
      throw CommError(str_cat("broadcast: root ", root, " is not a rank (world size ", size_, ")"));
    }
    const int64_t n = tensor.numel();
    return launch(CollectiveDesc{CollectiveOp::kBroadcast, ReduceOp::kSum, tensor.scalar_type(), n, 0}, {tensor},
                  [&] {
                    check_nccl(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(),
                                             static_cast<size_t>(n), nccl_type(tensor), root,
                                             comm_, stream()),
                               "ncclBroadcast");
                  });
  }

  WorkPtr barrier() override {
    torch::Tensor one = torch::ones({1}, torch::TensorOptions().device(device_));
    auto work = launch(CollectiveDesc{CollectiveOp::kBarrier, ReduceOp::kSum, one.scalar_type(), 1, 0}, {one},
                       [&] {
                         check_nccl(ncclAllReduce(one.data_ptr(), one.data_ptr(), 1, ncclFloat32,
                                                  ncclSum, comm_, stream()),
                                    "ncclAllReduce");
                       },
                       /*host_wait=*/true);
    return work;
  }

 private:
  cudaStream_t stream() const { return stream_->stream(); }

  template <class Fn>
  WorkPtr launch(CollectiveDesc desc, const std::vector<torch::Tensor>& tensors, Fn&& run,
                 bool host_wait = false) {
    if (broken_.load()) {
      throw CommError(str_cat(to_string(desc.op),
                              ": the communicator is broken by an earlier failed collective"));
    }
    desc.seq = ++seq_;
    c10::cuda::CUDAGuard guard(device_);
    // The comm stream starts after everything the caller queued so far.
    {
      Event ready;
      check_cuda(cudaEventRecord(ready.event,
                                 at::cuda::getCurrentCUDAStream(device_.index()).stream()),
                 "cudaEventRecord");
      check_cuda(cudaStreamWaitEvent(stream(), ready.event, 0), "cudaStreamWaitEvent");
    }
    // The caching allocator must not hand these blocks out again before the
    // comm stream is done with them.
    for (const auto& t : tensors) {
      c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), *stream_);
    }
    {
      c10::cuda::CUDAStreamGuard stream_guard(*stream_);  // torch ops in run() go there too
      run();
    }
    auto done = std::make_shared<Event>();
    check_cuda(cudaEventRecord(done->event, stream()), "cudaEventRecord");
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.push_back({desc, done, Clock::now() + options_.timeout});
    }
    if (board_) board_->issued.store(static_cast<int64_t>(desc.seq));
    cv_.notify_one();
    return std::make_shared<NcclWork>(std::move(done), host_wait);
  }

  // The watchdog: turns a hang or an asynchronous NCCL error into an error
  // that names the collective, then ends the job.
  void watch() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      while (!pending_.empty() && cudaEventQuery(pending_.front().done->event) == cudaSuccess) {
        pending_.pop_front();
        if (board_) board_->completed.fetch_add(1);
      }
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      std::string failure;
      if (async != ncclSuccess && async != ncclInProgress) {
        failure = str_cat(pending_.empty() ? std::string("a collective") : pending_.front().desc.name(),
                          " failed: ", ncclGetErrorString(async));
      } else if (!pending_.empty() && Clock::now() > pending_.front().deadline) {
        const double waited = std::chrono::duration<double>(options_.timeout).count();
        const std::string where = board_ ? board_->diagnose(pending_.front().desc.seq, waited)
                                         : "a rank has stopped, or the ranks issued different collectives";
        failure = str_cat(pending_.front().desc.name(), " did not complete within ", waited,
                          " s (comm.timeout_s): ", where,
                          " (comm.check_collectives=true compares the ranks' collectives)");
      }
      if (!failure.empty()) {
        broken_.store(true);
        std::fprintf(stderr, "shardtune: error on rank %d of %d: nccl: %s\n", rank_, size_,
                     failure.c_str());
        std::fflush(stderr);
        ncclCommAbort(comm_);
        comm_ = nullptr;
        DistContext::abort_all(kCommFailureExit);
      }
    }
  }

  void check_tensor(const torch::Tensor& t, const char* op, const char* which) const {
    detail::check_tensor(t, device_, "NCCL", op, which);
  }

  static ncclDataType_t nccl_type(const torch::Tensor& t) {
    switch (t.scalar_type()) {
      case torch::kFloat32:
        return ncclFloat32;
      case torch::kBFloat16:
        return ncclBfloat16;
      default:
        return ncclInt64;
    }
  }

  // avg sums, then divides on the comm stream. Not ncclAvg: it is for floating
  // types only, and a reduce-scatter of 2^20 + 3 floats with ncclAvg left the
  // last 3 elements unwritten on the NCCL of torch 2.11 (H100, world size 1).
  static ncclRedOp_t nccl_op(const torch::Tensor&, ReduceOp op) {
    return op == ReduceOp::kMax ? ncclMax : ncclSum;
  }

  void finish_avg(const torch::Tensor& t, ReduceOp op) const {
    if (op != ReduceOp::kAvg || size_ == 1 || t.numel() == 0) return;
    if (t.is_floating_point()) {
      t.div_(size_);
    } else {
      t.div_(size_, "trunc");
    }
  }

  static constexpr int kCommFailureExit = 1;

  struct Pending {
    CollectiveDesc desc;
    std::shared_ptr<Event> done;
    Clock::time_point deadline;
  };

  const CommOptions options_;
  const int rank_;
  const int size_;
  torch::Device device_{torch::kCUDA};
  ncclComm_t comm_ = nullptr;
  std::unique_ptr<c10::cuda::CUDAStream> stream_;
  uint64_t seq_ = 0;
  std::atomic<bool> broken_{false};

  std::unique_ptr<detail::StatusBoard> board_;  // world size > 1
  std::thread watchdog_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  bool stop_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions& options,
                                                     const DistInfo& dist) {
  return std::make_unique<NcclCommunicator>(options, dist);
}

}  // namespace shardtune
