// The MPI backend of Communicator.
//
// Collectives run on one dedicated thread that executes them in issue order
// with MPI's blocking calls. Why a thread and blocking calls rather than
// MPI_I* on the caller's thread: MPI libraries progress non-blocking
// collectives only while some MPI call runs, so a rank busy in backward
// would make no communication progress; and the blocking calls are the ones
// MPI libraries tune best, so shardtune's collectives cost what raw MPI does.
//
// Small all_reduces (up to kInlineBytes) issued while the thread has nothing
// to do run on the caller's thread instead: the hand-off to the thread and
// back costs more than the collective itself at a few KiB. The call returns
// with the collective done. The idle thread watches such a call's deadline,
// since a blocking MPI call cannot be unwound: a timeout there prints the
// same report and ends every rank, as the NCCL watchdog does.
//
// A status thread per rank answers "how far are you?" on a communicator of
// its own (polling with a sleep, never spinning). When a collective times
// out, the waiting rank asks every other one and names those that never
// reached the collective, with their host and pid.

#include <mpi.h>

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include <pthread.h>
#include <time.h>

#include "shardtune/comm/communicator.h"
#include "shardtune/core/strings.h"
#include "shardtune/dist/dist.h"

#include "collective_checks.h"
#include "mpi_check.h"
#include "status_board.h"

namespace shardtune {
namespace {

using detail::check_mpi;
using detail::check_numel;
using detail::CollectiveDesc;

using Clock = std::chrono::steady_clock;

// bfloat16 reductions as user-defined MPI ops (MPI has no bf16 type): each
// pair is combined in float and rounded back to nearest-even bf16.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const c10::BFloat16*>(in);
  auto* b = static_cast<c10::BFloat16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = static_cast<float>(a[i]) + static_cast<float>(b[i]);
}

void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const c10::BFloat16*>(in);
  auto* b = static_cast<c10::BFloat16*>(inout);
  for (int i = 0; i < *len; ++i) {
    float x = static_cast<float>(a[i]);
    float y = static_cast<float>(b[i]);
    if (x > y || std::isnan(x)) b[i] = a[i];
  }
}

std::string timeout_report(const CollectiveDesc& desc, std::chrono::milliseconds timeout,
                           detail::StatusBoard* board) {
  const double waited = std::chrono::duration<double>(timeout).count();
  const std::string where = board ? board->diagnose(desc.seq, waited)
                                  : "a rank has stopped, or the ranks issued different collectives";
  return str_cat(desc.name(), " did not complete within ", waited, " s (comm.timeout_s): ", where,
                 " (comm.check_collectives=true compares the ranks' collectives)");
}

class MpiWork final : public Work {
 public:
  MpiWork(const CollectiveDesc& desc, Clock::time_point deadline,
          std::chrono::milliseconds timeout, std::shared_ptr<std::atomic<bool>> broken,
          std::vector<torch::Tensor> tensors, std::weak_ptr<detail::StatusBoard> board)
      : desc_(desc),
        deadline_(deadline),
        timeout_(timeout),
        broken_(std::move(broken)),
        tensors_(std::move(tensors)),
        board_(std::move(board)) {}

  void wait() override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, deadline_, [&] { return done_; })) {
      broken_->store(true);
      const auto board = board_.lock();
      throw CommError(timeout_report(desc_, timeout_, board.get()));
    }
    if (!error_.empty()) throw CommError(error_);
  }

  bool is_completed() override {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

  void finish(std::string error) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      error_ = std::move(error);
      tensors_.clear();
    }
    cv_.notify_all();
  }

  std::string name() const { return desc_.name(); }

 private:
  const CollectiveDesc desc_;
  const Clock::time_point deadline_;
  const std::chrono::milliseconds timeout_;
  std::shared_ptr<std::atomic<bool>> broken_;
  std::vector<torch::Tensor> tensors_;  // kept alive until the collective is done
  std::weak_ptr<detail::StatusBoard> board_;  // the communicator's, while it lives
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string error_;
};

// The Work of a collective that ran on the caller's thread: already done.
class DoneWork final : public Work {
 public:
  explicit DoneWork(std::string error) : error_(std::move(error)) {}
  void wait() override {
    if (!error_.empty()) throw CommError(error_);
  }
  bool is_completed() override { return true; }

 private:
  const std::string error_;
};

// The finished, successful collective every inline call returns. It is
// never destroyed, so the pointer handed out owns nothing (the aliasing
// constructor over an empty one): copying and dropping it costs no atomic
// reference count, a noticeable part of a small all-reduce.
WorkPtr done_work() {
  static DoneWork* const done = new DoneWork("");
  return WorkPtr(WorkPtr(), done);
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const CommOptions& options) : options_(options) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    ST_CHECK(initialized, "the MPI communicator needs MPI initialised (make a DistContext first)");
    // A communicator of our own, so no other MPI traffic can match ours.
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    check_mpi(MPI_Type_contiguous(2, MPI_BYTE, &bf16_type_), "MPI_Type_contiguous");
    check_mpi(MPI_Type_commit(&bf16_type_), "MPI_Type_commit");
    check_mpi(MPI_Op_create(&bf16_sum, /*commute=*/1, &bf16_sum_op_), "MPI_Op_create");
    check_mpi(MPI_Op_create(&bf16_max, /*commute=*/1, &bf16_max_op_), "MPI_Op_create");
    if (size_ > 1) board_ = std::make_shared<detail::StatusBoard>(comm_, rank_, size_);
    worker_ = std::thread([this] { run(); });
    worker_handle_ = worker_.native_handle();
  }

  ~MpiCommunicator() override {
    board_.reset();  // its thread makes no MPI call after this
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (broken_->load()) {
      // The worker may sit in a collective that will never finish; the
      // process is on its way to MPI_Abort, so leave it there.
      worker_.detach();
      return;
    }
    worker_.join();
    MPI_Op_free(&bf16_sum_op_);
    MPI_Op_free(&bf16_max_op_);
    MPI_Type_free(&bf16_type_);
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  double thread_cpu_seconds() const override {
    clockid_t clock;
    timespec ts{};
    if (pthread_getcpuclockid(worker_handle_, &clock) != 0 || clock_gettime(clock, &ts) != 0) return -1.0;
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }

  WorkPtr all_reduce(const torch::Tensor& tensor, ReduceOp op) override {
    check_tensor(tensor, "all_reduce", "tensor");
    const int64_t n = tensor.numel();
    if (size_ > 1 && n * static_cast<int64_t>(tensor.element_size()) <= kInlineBytes && worker_idle()) {
      return run_inline(CollectiveOp::kAllReduce, op, tensor, n, [&] { reduce_all(tensor, op); });
    }
    return enqueue(CollectiveOp::kAllReduce, op, tensor, n, {tensor},
                   [this, tensor, op] { reduce_all(tensor, op); });
  }

  WorkPtr reduce_scatter(const torch::Tensor& input, const torch::Tensor& output,
                         ReduceOp op) override {
    detail::check_input_output(input, output, torch::kCPU, "MPI", "reduce_scatter");
    const int64_t n = input.numel();
    check_fits_int(n, "reduce_scatter");
    check_numel(output, shard_range(n, size_, rank_).length, "reduce_scatter", "output");
    return enqueue(CollectiveOp::kReduceScatter, op, input, n, {input, output},
                   [this, input, output, op, n] {
                     // Equal shards take the _block variant, which MPI
                     // libraries tune better than the general one.
                     if (n % size_ == 0) {
                       check_mpi(MPI_Reduce_scatter_block(
                                     input.data_ptr(), output.data_ptr(),
                                     static_cast<int>(n / size_), mpi_type(input),
                                     mpi_op(input, op), comm_),
                                 "MPI_Reduce_scatter_block");
                     } else {
                       std::vector<int> counts = shard_counts(n);
                       check_mpi(MPI_Reduce_scatter(input.data_ptr(), output.data_ptr(),
                                                    counts.data(), mpi_type(input),
                                                    mpi_op(input, op), comm_),
                                 "MPI_Reduce_scatter");
                     }
                     finish_avg(output, op);
                   });
  }

  WorkPtr reduce_scatter_counts(const torch::Tensor& input, const torch::Tensor& output,
                                const std::vector<int64_t>& counts, ReduceOp op) override {
    detail::check_input_output(input, output, torch::kCPU, "MPI", "reduce_scatter");
    const int64_t n = input.numel();
    check_fits_int(n, "reduce_scatter");
    check_numel(output, detail::check_counts(counts, size_, rank_, n, "reduce_scatter"), "reduce_scatter", "output");
    std::vector<int> ints(counts.begin(), counts.end());
    return enqueue(CollectiveOp::kReduceScatter, op, input, n, {input, output},
                   [this, input, output, op, ints] {
                     check_mpi(MPI_Reduce_scatter(input.data_ptr(), output.data_ptr(), ints.data(),
                                                  mpi_type(input), mpi_op(input, op), comm_),
                               "MPI_Reduce_scatter");
                     finish_avg(output, op);
                   });
  }

  WorkPtr all_gather(const torch::Tensor& input, const torch::Tensor& output) override {
    detail::check_input_output(input, output, torch::kCPU, "MPI", "all_gather");
    const int64_t n = output.numel();
    check_fits_int(n, "all_gather");
    const ShardRange own = shard_range(n, size_, rank_);
    check_numel(input, own.length, "all_gather", "input");
    const bool in_place =
        static_cast<const char*>(input.data_ptr()) ==
        static_cast<const char*>(output.data_ptr()) + own.offset * output.element_size();
    return enqueue(CollectiveOp::kAllGather, ReduceOp::kSum, output, n, {input, output},
                   [this, input, output, n, in_place] {
                     const void* send = in_place ? MPI_IN_PLACE : input.data_ptr();
                     if (n % size_ == 0) {
                       const int each = static_cast<int>(n / size_);
                       check_mpi(MPI_Allgather(send, each, mpi_type(input), output.data_ptr(),
                                               each, mpi_type(output), comm_),
                                 "MPI_Allgather");
                       return;
                     }
                     std::vector<int> counts = shard_counts(n);
                     std::vector<int> displs(counts.size(), 0);
                     for (size_t r = 1; r < counts.size(); ++r) {
                       displs[r] = displs[r - 1] + counts[r - 1];
                     }
                     check_mpi(MPI_Allgatherv(send, counts[static_cast<size_t>(rank_)],
                                              mpi_type(input), output.data_ptr(), counts.data(),
                                              displs.data(), mpi_type(output), comm_),
                               "MPI_Allgatherv");
                   });
  }

  WorkPtr all_gather_counts(const torch::Tensor& input, const torch::Tensor& output,
                            const std::vector<int64_t>& counts) override {
    detail::check_input_output(input, output, torch::kCPU, "MPI", "all_gather");
    const int64_t n = output.numel();
    check_fits_int(n, "all_gather");
    check_numel(input, detail::check_counts(counts, size_, rank_, n, "all_gather"), "all_gather", "input");
    std::vector<int> ints(counts.begin(), counts.end());
    std::vector<int> displs(ints.size(), 0);
    for (size_t r = 1; r < ints.size(); ++r) displs[r] = displs[r - 1] + ints[r - 1];
    return enqueue(CollectiveOp::kAllGather, ReduceOp::kSum, output, n, {input, output},
                   [this, input, output, ints, displs] {
                     check_mpi(MPI_Allgatherv(input.data_ptr(), ints[static_cast<size_t>(rank_)], mpi_type(input),
                                              output.data_ptr(), ints.data(), displs.data(), mpi_type(output), comm_),
                               "MPI_Allgatherv");
                   });
  }

  WorkPtr broadcast(const torch::Tensor& tensor, int root) override {
    check_tensor(tensor, "broadcast", "tensor");
    if (root < 0 || root >= size_) {
      throw CommError(str_cat("broadcast: root ", root, " is not a rank (world size ", size_, ")"));
    }
    const int64_t n = tensor.numel();
    return enqueue(CollectiveOp::kBroadcast, ReduceOp::kSum, tensor, n, {tensor},
                   [this, tensor, root, n] {
                     char* data = static_cast<char*>(tensor.data_ptr());
                     const size_t elem = tensor.element_size();
                     for (int64_t done = 0; done < n; done += kMaxChunk) {
                       const int count = static_cast<int>(std::min<int64_t>(kMaxChunk, n - done));
                       check_mpi(MPI_Bcast(data + done * elem, count, mpi_type(tensor), root,
                                           comm_),
                                 "MPI_Bcast");
                     }
                   });
  }

  WorkPtr barrier() override {
    return enqueue(CollectiveOp::kBarrier, ReduceOp::kSum, torch::Tensor(), 0, {},
                   [this] { check_mpi(MPI_Barrier(comm_), "MPI_Barrier"); });
  }

 private:
  static constexpr int64_t kMaxChunk = int64_t{1} << 30;

  void reduce_all(const torch::Tensor& tensor, ReduceOp op) {
    char* data = static_cast<char*>(tensor.data_ptr());
    const int64_t n = tensor.numel();
    const size_t elem = tensor.element_size();
    // MPI counts are ints: reduce in pieces of at most 2^30 elements.
    for (int64_t done = 0; done < n; done += kMaxChunk) {
      const int count = static_cast<int>(std::min<int64_t>(kMaxChunk, n - done));
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + done * elem, count, mpi_type(tensor), mpi_op(tensor, op), comm_),
                "MPI_Allreduce");
    }
    finish_avg(tensor, op);
  }
  // All-reduces up to this size run on the caller's thread when the
  // communication thread is idle (the hand-off costs more than they do).
  static constexpr int64_t kInlineBytes = int64_t{256} << 10;

  struct Task {
    std::shared_ptr<MpiWork> work;
    std::function<void()> run;
  };

  CollectiveDesc describe(CollectiveOp op, ReduceOp reduce, const torch::Tensor& described, int64_t n) {
    if (broken_->load()) {
      throw CommError(str_cat(to_string(op),
                              ": the communicator is broken by an earlier failed collective"));
    }
    CollectiveDesc desc;
    desc.op = op;
    desc.reduce = reduce;
    desc.dtype = described.defined() ? described.scalar_type() : c10::ScalarType::Undefined;
    desc.count = n;
    desc.seq = ++seq_;
    return desc;
  }

  // True when no collective is queued or running: one issued now may run on
  // the caller's thread without overtaking any. (Only the caller's thread
  // queues, so this stays true until it queues again.)
  bool worker_idle() const { return pending_.load(std::memory_order_acquire) == 0; }

  // Runs a collective on the caller's thread while the communication thread
  // watches it (see watch_inline). No clock is read here: on a small
  // all-reduce it would cost a noticeable part of the call.
  template <typename Run>
  WorkPtr run_inline(CollectiveOp op, ReduceOp reduce, const torch::Tensor& described, int64_t n,
                     const Run& run) {
    const CollectiveDesc desc = describe(op, reduce, described, n);
    if (board_) board_->issued.store(static_cast<int64_t>(desc.seq), std::memory_order_relaxed);
    inline_.op.store(static_cast<int64_t>(desc.op), std::memory_order_relaxed);
    inline_.reduce.store(static_cast<int64_t>(desc.reduce), std::memory_order_relaxed);
    inline_.dtype.store(static_cast<int64_t>(desc.dtype), std::memory_order_relaxed);
    inline_.count.store(desc.count, std::memory_order_relaxed);
    inline_.running.store(desc.seq, std::memory_order_release);
    std::string error;
    try {
      run();
      // Only this thread counts now (the communication thread is idle and
      // counted before it said so), so no atomic read-modify-write.
      if (board_) {
        auto& completed = board_->completed;
        completed.store(completed.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      }
    } catch (const std::exception& e) {
      broken_->store(true);
      error = str_cat(desc.name(), " failed on rank ", rank_, ": ", e.what());
    }
    inline_.running.store(0, std::memory_order_release);
    if (error.empty()) return done_work();
    return std::make_shared<DoneWork>(std::move(error));
  }

  // On the communication thread while it is idle, every kWatchPeriod: a
  // collective seen running on the caller's thread for longer than the
  // timeout (the same sequence number at both ends, so it ran throughout)
  // is stuck in a blocking MPI call that cannot be unwound, so report it and
  // end every rank. It is caught between timeout and timeout + 2 periods
  // after it began.
  void watch_inline() {
    const uint64_t seq = inline_.running.load(std::memory_order_acquire);
    const Clock::time_point now = Clock::now();
    if (seq == 0 || seq != watched_seq_) {
      watched_seq_ = seq;
      watched_since_ = now;
      return;
    }
    if (now - watched_since_ < options_.timeout) return;
    CollectiveDesc desc;
    desc.op = static_cast<CollectiveOp>(inline_.op.load(std::memory_order_relaxed));
    desc.reduce = static_cast<ReduceOp>(inline_.reduce.load(std::memory_order_relaxed));
    desc.dtype = static_cast<c10::ScalarType>(inline_.dtype.load(std::memory_order_relaxed));
    desc.count = inline_.count.load(std::memory_order_relaxed);
    desc.seq = seq;
    // Read again: the fields belong to this collective only if it is still
    // running.
    if (inline_.running.load(std::memory_order_acquire) != seq) return;
    broken_->store(true);
    const std::string report = timeout_report(desc, options_.timeout, board_.get());
    std::fprintf(stderr, "shardtune: error on rank %d of %d: %s\n", rank_, size_, report.c_str());
    std::fflush(stderr);
    DistContext::abort_all(kCommFailureExit);
  }

  WorkPtr enqueue(CollectiveOp op, ReduceOp reduce, const torch::Tensor& described, int64_t n,
                  std::vector<torch::Tensor> tensors, std::function<void()> run) {
    const CollectiveDesc desc = describe(op, reduce, described, n);
    auto work = std::make_shared<MpiWork>(desc, Clock::now() + options_.timeout, options_.timeout,
                                          broken_, std::move(tensors), board_);
    if (board_) board_->issued.store(static_cast<int64_t>(desc.seq));
    pending_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(Task{work, std::move(run)});
    }
    cv_.notify_one();
    return work;
  }

  void run() {
    while (true) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        // Idle: wake now and then to watch a collective on the caller's thread.
        while (!cv_.wait_for(lock, kWatchPeriod, [&] { return stop_ || !queue_.empty(); })) {
          watch_inline();
        }
        if (queue_.empty()) return;  // stop_ and nothing left to do
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      std::string error;
      if (broken_->load()) {
        error = str_cat(task.work->name(), ": not run, the communicator is broken by an earlier failure");
      } else {
        try {
          task.run();
          if (board_) board_->completed.fetch_add(1);
        } catch (const std::exception& e) {
          broken_->store(true);
          error = str_cat(task.work->name(), " failed on rank ", rank_, ": ", e.what());
        }
      }
      // Before finish(): a caller woken by it finds the thread idle.
      pending_.fetch_sub(1, std::memory_order_release);
      task.work->finish(std::move(error));
    }
  }

  void check_tensor(const torch::Tensor& t, const char* op, const char* which) const {
    detail::check_tensor(t, torch::kCPU, "MPI", op, which);
  }

  static void check_fits_int(int64_t n, const char* op) {
    if (n > INT_MAX) {
      throw CommError(str_cat(op, ": ", n, " elements exceed MPI's count limit (", INT_MAX,
                              "); split the buffer"));
    }
  }

  std::vector<int> shard_counts(int64_t n) const {
    std::vector<int> counts(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      counts[static_cast<size_t>(r)] = static_cast<int>(shard_range(n, size_, r).length);
    }
    return counts;
  }

  MPI_Datatype mpi_type(const torch::Tensor& t) const {
    switch (t.scalar_type()) {
      case torch::kFloat32:
        return MPI_FLOAT;
      case torch::kInt64:
        return MPI_INT64_T;
      default:
        return bf16_type_;
    }
  }

  MPI_Op mpi_op(const torch::Tensor& t, ReduceOp op) const {
    const bool bf16 = t.scalar_type() == torch::kBFloat16;
    if (op == ReduceOp::kMax) return bf16 ? bf16_max_op_ : MPI_MAX;
    return bf16 ? bf16_sum_op_ : MPI_SUM;  // kAvg sums, then divides
  }

  void finish_avg(const torch::Tensor& t, ReduceOp op) const {
    if (op != ReduceOp::kAvg || size_ == 1 || t.numel() == 0) return;
    if (t.scalar_type() == torch::kInt64) {
      t.div_(size_, "trunc");
    } else {
      t.div_(size_);
    }
  }

  const CommOptions options_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  MPI_Datatype bf16_type_ = MPI_DATATYPE_NULL;
  MPI_Op bf16_sum_op_ = MPI_OP_NULL;
  MPI_Op bf16_max_op_ = MPI_OP_NULL;
  uint64_t seq_ = 0;
  std::shared_ptr<std::atomic<bool>> broken_ = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<detail::StatusBoard> board_;  // world size > 1

  std::thread worker_;
  pthread_t worker_handle_{};  // for its CPU clock (after a detach too)
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stop_ = false;
  std::atomic<int64_t> pending_{0};  // collectives queued or running on the thread

  // The collective running on the caller's thread: its description, in
  // atomics the watching thread may read, and its sequence number (0 when
  // none runs). The watcher's own record: which one it saw running, since
  // when.
  struct InlineCall {
    std::atomic<int64_t> op{0}, reduce{0}, dtype{0}, count{0};
    std::atomic<uint64_t> running{0};
  };
  uint64_t watched_seq_ = 0;
  Clock::time_point watched_since_{};
  static constexpr std::chrono::milliseconds kWatchPeriod{250};
  static constexpr int kCommFailureExit = 1;
  InlineCall inline_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& options) {
  return std::make_unique<MpiCommunicator>(options);
}

}  // namespace shardtune
