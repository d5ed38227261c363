// Collectives of the MPI backend, run as 1, 2 and 4 ranks. Each rank checks
// the result against values it computes alone from the known inputs of every
// rank. Inputs are small integers, so float32 and bfloat16 results are exact
// whatever order MPI reduces in.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <tuple>

#include "support/mpi_env.h"

namespace shardtune {
namespace {

using shardtune::testing::comm;

// What rank r holds at elements [offset, offset + n): integers in [-5, 5].
torch::Tensor input_of(int r, int64_t offset, int64_t n, torch::Dtype dtype) {
  torch::Tensor idx = torch::arange(offset, offset + n, torch::kInt64);
  torch::Tensor v = ((idx * 7 + r * 3) % 11) - 5;
  return v.to(dtype);
}

// What a reduction over all ranks gives at elements [offset, offset + n).
torch::Tensor expected_reduction(ReduceOp op, int world, int64_t offset, int64_t n,
                                 torch::Dtype dtype) {
  torch::Tensor acc = input_of(0, offset, n, torch::kFloat64);
  for (int r = 1; r < world; ++r) {
    torch::Tensor x = input_of(r, offset, n, torch::kFloat64);
    acc = op == ReduceOp::kMax ? torch::maximum(acc, x) : acc + x;
  }
  if (op == ReduceOp::kAvg) {
    acc = dtype == torch::kInt64 ? torch::trunc(acc / world) : acc / world;
  }
  return acc.to(dtype);
}

void expect_equal(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.numel(), want.numel()) << what;
  if (got.numel() == 0) return;
  torch::Tensor diff = got.to(torch::kFloat64) != want.to(torch::kFloat64);
  const int64_t wrong = diff.sum().item<int64_t>();
  if (wrong > 0) {
    const int64_t first = diff.nonzero()[0][0].item<int64_t>();
    FAIL() << what << ": " << wrong << " wrong elements; first at " << first << ": got "
           << got[first].item<double>() << ", want " << want[first].item<double>();
  }
}

enum class Backend { kMpi, kNccl };

using Case = std::tuple<Backend, torch::Dtype, int64_t>;

// Runs each case on the MPI backend (CPU tensors) and, where there are GPUs,
// on the NCCL backend (CUDA tensors); results are compared on the CPU.
class Collectives : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (std::get<0>(GetParam()) == Backend::kNccl) {
      comm_ = shardtune::testing::nccl_comm();
      if (comm_ == nullptr) {
        GTEST_SKIP() << "NCCL backend not tested: this build has no CUDA support or a rank has "
                        "no GPU";
      }
      device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(
                                                shardtune::testing::dist().info().local_rank));
    } else {
      comm_ = &comm();
    }
  }
  Communicator& c() { return *comm_; }
  torch::Dtype dtype() const { return std::get<1>(GetParam()); }
  int64_t count() const { return std::get<2>(GetParam()); }
  // Inputs on the backend's device.
  torch::Tensor on(const torch::Tensor& t) const { return t.to(device_); }
  torch::Tensor full(int64_t n, double v) const {
    return torch::full({n}, v, torch::TensorOptions().dtype(dtype()).device(device_));
  }

 private:
  Communicator* comm_ = nullptr;
  torch::Device device_{torch::kCPU};
};

TEST_P(Collectives, AllReduce) {
  const int world = c().size();
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
    torch::Tensor t = on(input_of(c().rank(), 0, count(), dtype()));
    c().all_reduce(t, op)->wait();
    expect_equal(t.cpu(), expected_reduction(op, world, 0, count(), dtype()),
                 str_cat("all_reduce ", to_string(op)));
  }
}

TEST_P(Collectives, ReduceScatter) {
  const int world = c().size();
  const ShardRange own = shard_range(count(), world, c().rank());
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
    torch::Tensor in = on(input_of(c().rank(), 0, count(), dtype()));
    torch::Tensor out = full(own.length, 99);
    c().reduce_scatter(in, out, op)->wait();
    expect_equal(out.cpu(), expected_reduction(op, world, own.offset, own.length, dtype()),
                 str_cat("reduce_scatter ", to_string(op)));
  }
}

TEST_P(Collectives, ReduceScatterWithGivenCounts) {
  const int world = c().size();
  // Uneven pieces, the first rank's empty: as a bucket crossing shard edges.
  std::vector<int64_t> counts(static_cast<size_t>(world), 0);
  int64_t left = count();
  for (int r = world - 1; r > 0 && left > 0; --r) {
    counts[static_cast<size_t>(r)] = std::min<int64_t>(left, (count() + r) / (r + 1));
    left -= counts[static_cast<size_t>(r)];
  }
  counts[0] += left;
  if (world > 1 && counts[0] > 0) {  // move rank 0's piece to the last rank
    counts[static_cast<size_t>(world - 1)] += counts[0];
    counts[0] = 0;
  }
  int64_t offset = 0;
  for (int r = 0; r < c().rank(); ++r) offset += counts[static_cast<size_t>(r)];
  const int64_t mine = counts[static_cast<size_t>(c().rank())];
  torch::Tensor in = on(input_of(c().rank(), 0, count(), dtype()));
  torch::Tensor out = full(mine, 99);
  c().reduce_scatter_counts(in, out, counts, ReduceOp::kSum)->wait();
  expect_equal(out.cpu(), expected_reduction(ReduceOp::kSum, world, offset, mine, dtype()), "reduce_scatter_counts");
}

TEST_P(Collectives, AllGatherWithGivenCounts) {
  const int world = c().size();
  // Rank 0 contributes nothing, the last rank the rest: a unit crossing shard edges.
  std::vector<int64_t> counts(static_cast<size_t>(world), 0);
  int64_t left = count();
  for (int r = 1; r < world && left > 0; ++r) {
    counts[static_cast<size_t>(r)] = r == world - 1 ? left : std::min<int64_t>(left, count() / world);
    left -= counts[static_cast<size_t>(r)];
  }
  if (world == 1) counts[0] = count();
  int64_t offset = 0;
  for (int r = 0; r < c().rank(); ++r) offset += counts[static_cast<size_t>(r)];
  torch::Tensor want = torch::empty({count()}, dtype());
  int64_t o = 0;
  for (int r = 0; r < world; ++r) {
    const int64_t n = counts[static_cast<size_t>(r)];
    want.narrow(0, o, n).copy_(input_of(r, o, n, dtype()));
    o += n;
  }
  torch::Tensor out = full(count(), 99);
  const int64_t mine = counts[static_cast<size_t>(c().rank())];
  c().all_gather_counts(on(input_of(c().rank(), offset, mine, dtype())), out, counts)->wait();
  expect_equal(out.cpu(), want, "all_gather_counts");
}

TEST_P(Collectives, AllGather) {
  const int world = c().size();
  const int rank = c().rank();
  // Element i of the result was contributed by the rank owning i.
  torch::Tensor want = torch::empty({count()}, dtype());
  for (int r = 0; r < world; ++r) {
    const ShardRange s = shard_range(count(), world, r);
    want.narrow(0, s.offset, s.length).copy_(input_of(r, s.offset, s.length, dtype()));
  }
  const ShardRange own = shard_range(count(), world, rank);

  torch::Tensor out = full(count(), 99);
  c().all_gather(on(input_of(rank, own.offset, own.length, dtype())), out)->wait();
  expect_equal(out.cpu(), want, "all_gather");

  // In place: the input is this rank's range of the output.
  torch::Tensor buf = full(count(), 99);
  torch::Tensor view = buf.narrow(0, own.offset, own.length);
  view.copy_(on(input_of(rank, own.offset, own.length, dtype())));
  c().all_gather(view, buf)->wait();
  expect_equal(buf.cpu(), want, "all_gather in place");
}

TEST_P(Collectives, Broadcast) {
  const int world = c().size();
  for (int root : {0, world - 1}) {
    torch::Tensor t = c().rank() == root ? on(input_of(root, 0, count(), dtype())) : full(count(), 99);
    c().broadcast(t, root)->wait();
    expect_equal(t.cpu(), input_of(root, 0, count(), dtype()), str_cat("broadcast from ", root));
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return str_cat(std::get<0>(info.param) == Backend::kNccl ? "nccl_" : "mpi_",
                 dtype_name(std::get<1>(info.param)), "_", std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(BackendsDtypesAndCounts, Collectives,
                         ::testing::Combine(::testing::Values(Backend::kMpi, Backend::kNccl),
                                            ::testing::Values(torch::kFloat32, torch::kBFloat16,
                                                              torch::kInt64),
                                            ::testing::Values(int64_t{1}, int64_t{7},
                                                              int64_t{1048579})),
                         case_name);

TEST(Communicator, ShardRangeCoversTheBufferInOrder) {
  for (int64_t n : {0, 1, 7, 8, 1048579}) {
    for (int w : {1, 2, 3, 4, 7}) {
      int64_t next = 0;
      for (int r = 0; r < w; ++r) {
        const ShardRange s = shard_range(n, w, r);
        EXPECT_EQ(s.offset, next);
        EXPECT_GE(s.length, n / w);
        EXPECT_LE(s.length, n / w + 1);
        next += s.length;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(Communicator, ManyOutstandingCollectivesCompleteInOrder) {
  const int world = comm().size();
  std::vector<torch::Tensor> tensors;
  std::vector<WorkPtr> works;
  for (int k = 0; k < 16; ++k) {
    tensors.push_back(torch::full({1000 + k}, comm().rank() + k, torch::kFloat32));
    works.push_back(comm().all_reduce(tensors.back(), ReduceOp::kSum));
  }
  works.push_back(comm().barrier());
  for (auto it = works.rbegin(); it != works.rend(); ++it) (*it)->wait();
  for (int k = 0; k < 16; ++k) {
    const double want = world * (world - 1) / 2.0 + world * k;
    EXPECT_TRUE(works[static_cast<size_t>(k)]->is_completed());
    EXPECT_EQ(tensors[static_cast<size_t>(k)].min().item<double>(), want);
    EXPECT_EQ(tensors[static_cast<size_t>(k)].max().item<double>(), want);
  }
}

// Small all_reduces run on the caller's thread when nothing is pending and
// queue behind pending ones otherwise; either way results come in issue
// order, with a broadcast and a barrier in between.
TEST(Communicator, SmallAndLargeCollectivesInterleaveInIssueOrder) {
  const int world = comm().size();
  const int64_t large = int64_t{1} << 20;  // 4 MiB: queued
  std::vector<torch::Tensor> tensors;
  std::vector<WorkPtr> works;
  for (int k = 0; k < 12; ++k) {
    const int64_t n = k % 3 == 0 ? large : 16 + k;
    tensors.push_back(torch::full({n}, comm().rank() + k, torch::kFloat32));
    works.push_back(comm().all_reduce(tensors.back(), ReduceOp::kSum));
    if (k == 5) works.push_back(comm().barrier());
  }
  torch::Tensor root = torch::full({8}, comm().rank() == 0 ? 7.0 : -1.0, torch::kInt64);
  works.push_back(comm().broadcast(root, 0));
  for (auto it = works.rbegin(); it != works.rend(); ++it) (*it)->wait();
  for (int k = 0; k < 12; ++k) {
    const double want = world * (world - 1) / 2.0 + world * k;
    const torch::Tensor& t = tensors[static_cast<size_t>(k)];
    EXPECT_EQ(t.min().item<double>(), want) << k;
    EXPECT_EQ(t.max().item<double>(), want) << k;
  }
  EXPECT_EQ(root.min().item<int64_t>(), 7);
  EXPECT_EQ(root.max().item<int64_t>(), 7);
  // With nothing pending, a small one is done when the call returns.
  torch::Tensor small = torch::ones({4}, torch::kInt64);
  WorkPtr w = comm().all_reduce(small, ReduceOp::kAvg);
  if (world > 1) {
    EXPECT_TRUE(w->is_completed());
  }
  w->wait();
  EXPECT_EQ(small.min().item<int64_t>(), 1);
}

TEST(Communicator, RejectsBadArgumentsOnEveryRankAlike) {
  // These throw before anything is sent, identically on every rank.
  torch::Tensor half = torch::ones({4}, torch::kFloat16);
  EXPECT_THROW(
      {
        try {
          comm().all_reduce(half, ReduceOp::kSum);
        } catch (const CommError& e) {
          EXPECT_NE(std::string(e.what()).find("float16"), std::string::npos) << e.what();
          throw;
        }
      },
      CommError);
  torch::Tensor strided = torch::ones({4, 4}).t();
  EXPECT_THROW(comm().all_reduce(strided, ReduceOp::kSum), CommError);
  torch::Tensor in = torch::ones({10});
  torch::Tensor wrong = torch::ones({11});
  EXPECT_THROW(comm().reduce_scatter(in, wrong, ReduceOp::kSum), CommError);
  EXPECT_THROW(comm().all_gather(wrong, in), CommError);
  EXPECT_THROW(comm().broadcast(in, comm().size()), CommError);
  torch::Tensor mixed = torch::ones({shard_range(10, comm().size(), comm().rank()).length},
                                    torch::kInt64);
  EXPECT_THROW(comm().reduce_scatter(in, mixed, ReduceOp::kSum), CommError);
  // The communicator still works afterwards.
  torch::Tensor ok = torch::ones({3});
  comm().all_reduce(ok, ReduceOp::kSum)->wait();
  EXPECT_EQ(ok.sum().item<double>(), 3.0 * comm().size());
}

TEST(Communicator, CheckingWrapperPassesMatchingCalls) {
  CommOptions options;
  options.timeout = std::chrono::seconds(60);
  auto checked = make_checking_communicator(make_mpi_communicator(options));
  ASSERT_EQ(checked->rank(), comm().rank());
  EXPECT_EQ(checked->backend(), "mpi+check");
  torch::Tensor t = torch::full({5}, 1.0f);
  checked->all_reduce(t, ReduceOp::kSum)->wait();
  EXPECT_EQ(t[0].item<float>(), static_cast<float>(checked->size()));
  torch::Tensor out = torch::empty({5});
  const ShardRange own = shard_range(5, checked->size(), checked->rank());
  checked->all_gather(torch::ones({own.length}), out)->wait();
  checked->broadcast(out, 0)->wait();
  checked->barrier()->wait();
  EXPECT_EQ(out.sum().item<float>(), 5.0f);
}

}  // namespace
}  // namespace shardtune

namespace shardtune {
namespace {

TEST(Communicator, NcclBackendNeedsCudaOrAGpu) {
  if (nccl_available(shardtune::testing::dist().info())) {
    GTEST_SKIP() << "this rank has a GPU: the NCCL backend is tested above";
  }
  CommConfig config;
  config.backend = "nccl";
  EXPECT_THROW(make_communicator(config, shardtune::testing::dist().info()), CommError);
}

TEST(Communicator, NcclOrdersTheCallersStream) {
  Communicator* nccl = shardtune::testing::nccl_comm();
  if (nccl == nullptr) GTEST_SKIP() << "no NCCL backend here";
  // Work queued on the compute stream before the collective is reduced; work
  // queued after wait() sees the result, with no host synchronisation between.
  const torch::Device dev(torch::kCUDA, static_cast<c10::DeviceIndex>(
                                            shardtune::testing::dist().info().local_rank));
  torch::Tensor t = torch::zeros({1 << 20}, torch::TensorOptions().device(dev));
  for (int i = 0; i < 10; ++i) t.add_(1.0);  // queued, maybe not yet run
  nccl->all_reduce(t, ReduceOp::kSum)->wait();
  torch::Tensor after = t * 2;
  const double want = 10.0 * nccl->size() * 2;
  EXPECT_EQ(after.min().item<double>(), want);
  EXPECT_EQ(after.max().item<double>(), want);
  nccl->barrier()->wait();
}

}  // namespace
}  // namespace shardtune
