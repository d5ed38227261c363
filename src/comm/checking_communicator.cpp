// A Communicator wrapper that verifies, before every collective, that all
// ranks are about to issue the same one. Without it, ranks that disagree
// (one calls all_reduce while another calls all_gather, or with different
// counts) hang or corrupt memory; with it, every rank fails with a message
// that says what each rank called.

#include <sstream>

#include "shardtune/comm/communicator.h"

namespace shardtune {
namespace {

// What a rank is about to call, as a fixed-size int64 record.
struct CallRecord {
  int64_t call = 0;  // 1-based number of the call on this communicator
  int64_t op = 0;
  int64_t reduce = 0;
  int64_t dtype = -1;
  int64_t count = 0;  // elements of the full (unsharded) buffer
  int64_t root = -1;

  static constexpr int64_t kFields = 6;

  bool operator==(const CallRecord& o) const {
    return call == o.call && op == o.op && reduce == o.reduce && dtype == o.dtype &&
           count == o.count && root == o.root;
  }

  std::string describe() const {
    std::ostringstream os;
    const auto cop = static_cast<CollectiveOp>(op);
    os << "call #" << call << " " << to_string(cop);
    if (cop == CollectiveOp::kBarrier) return os.str();
    os << "(";
    if (cop == CollectiveOp::kAllReduce || cop == CollectiveOp::kReduceScatter) {
      os << to_string(static_cast<ReduceOp>(reduce)) << ", ";
    }
    os << dtype_name(static_cast<c10::ScalarType>(dtype)) << ", " << count << " elements";
    if (cop == CollectiveOp::kBroadcast) os << ", root " << root;
    os << ")";
    return os.str();
  }
};

class CheckingCommunicator final : public Communicator {
 public:
  explicit CheckingCommunicator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend() const override { return inner_->backend() + "+check"; }
  double thread_cpu_seconds() const override { return inner_->thread_cpu_seconds(); }

  WorkPtr all_reduce(const torch::Tensor& tensor, ReduceOp op) override {
    verify(CollectiveOp::kAllReduce, op, tensor, tensor.numel(), -1);
    return inner_->all_reduce(tensor, op);
  }

  WorkPtr reduce_scatter(const torch::Tensor& input, const torch::Tensor& output,
                         ReduceOp op) override {
    verify(CollectiveOp::kReduceScatter, op, input, input.numel(), -1);
    return inner_->reduce_scatter(input, output, op);
  }

  WorkPtr reduce_scatter_counts(const torch::Tensor& input, const torch::Tensor& output,
                                const std::vector<int64_t>& counts, ReduceOp op) override {
    verify(CollectiveOp::kReduceScatter, op, input, input.numel(), -1);
    return inner_->reduce_scatter_counts(input, output, counts, op);
  }

  WorkPtr all_gather(const torch::Tensor& input, const torch::Tensor& output) override {
    verify(CollectiveOp::kAllGather, ReduceOp::kSum, output, output.numel(), -1);
    return inner_->all_gather(input, output);
  }

  WorkPtr all_gather_counts(const torch::Tensor& input, const torch::Tensor& output,
                            const std::vector<int64_t>& counts) override {
    verify(CollectiveOp::kAllGather, ReduceOp::kSum, output, output.numel(), -1);
    return inner_->all_gather_counts(input, output, counts);
  }

  WorkPtr broadcast(const torch::Tensor& tensor, int root) override {
    verify(CollectiveOp::kBroadcast, ReduceOp::kSum, tensor, tensor.numel(), root);
    return inner_->broadcast(tensor, root);
  }

  WorkPtr barrier() override {
    verify(CollectiveOp::kBarrier, ReduceOp::kSum, torch::Tensor(), 0, -1);
    return inner_->barrier();
  }

 private:
  void verify(CollectiveOp op, ReduceOp reduce, const torch::Tensor& t, int64_t count, int root) {
    CallRecord mine;
    mine.call = ++calls_;
    mine.op = static_cast<int64_t>(op);
    mine.reduce = (op == CollectiveOp::kAllReduce || op == CollectiveOp::kReduceScatter)
                      ? static_cast<int64_t>(reduce)
                      : 0;
    mine.dtype = t.defined() ? static_cast<int64_t>(t.scalar_type()) : -1;
    mine.count = count;
    mine.root = root;

    const int world = size();
    // The records travel on the device of the checked tensor, so the inner
    // backend can carry them whatever it supports.
    const auto device = t.defined() ? t.device() : torch::Device(torch::kCPU);
    const auto options = torch::TensorOptions().dtype(torch::kInt64).device(device);
    torch::Tensor all = torch::empty({world * CallRecord::kFields}, options);
    torch::Tensor own = torch::tensor(std::vector<int64_t>{mine.call, mine.op, mine.reduce,
                                                           mine.dtype, mine.count, mine.root},
                                      torch::TensorOptions().dtype(torch::kInt64))
                            .to(device);
    inner_->all_gather(own, all)->wait();
    const torch::Tensor host = all.cpu();
    const int64_t* v = host.data_ptr<int64_t>();

    std::vector<CallRecord> records(static_cast<size_t>(world));
    bool agree = true;
    for (int r = 0; r < world; ++r) {
      const int64_t* f = v + r * CallRecord::kFields;
      records[static_cast<size_t>(r)] = CallRecord{f[0], f[1], f[2], f[3], f[4], f[5]};
      agree = agree && records[static_cast<size_t>(r)] == records[0];
    }
    if (agree) return;
    std::ostringstream os;
    os << "collective mismatch: the ranks issued different collectives:";
    for (int r = 0; r < world; ++r) {
      os << "\n  rank " << r << ": " << records[static_cast<size_t>(r)].describe();
    }
    throw CommError(os.str());
  }

  std::unique_ptr<Communicator> inner_;
  int64_t calls_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_checking_communicator(std::unique_ptr<Communicator> inner) {
  return std::make_unique<CheckingCommunicator>(std::move(inner));
}

}  // namespace shardtune
