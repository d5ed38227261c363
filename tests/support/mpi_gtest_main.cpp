// main() of the multi-rank GoogleTest programs, run as `mpirun -np N prog`.
//
// Every rank runs every test. Rank 0 prints the usual report; the other
// ranks print only failures, prefixed with their rank. If any test fails on
// a rank, that rank ends the whole job with MPI_Abort: the others may be
// waiting in a collective that will never complete.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <memory>

#include "shardtune/cli/rank_main.h"
#include "support/mpi_env.h"

namespace shardtune::testing {
namespace {

DistContext* g_dist = nullptr;
std::unique_ptr<Communicator> g_comm;
std::unique_ptr<Communicator> g_nccl;
bool g_nccl_checked = false;

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.summary());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
    }
  }

 private:
  int rank_;
};

}  // namespace

DistContext& dist() { return *g_dist; }

Communicator& comm() {
  if (!g_comm) {
    CommOptions options;
    options.timeout = std::chrono::seconds(60);
    g_comm = make_mpi_communicator(options);
  }
  return *g_comm;
}

Communicator* nccl_comm() {
  if (!g_nccl_checked) {
    g_nccl_checked = true;
    // Every rank must agree, or some would wait in NCCL set-up for ever.
    torch::Tensor ok = torch::tensor({nccl_available(g_dist->info()) ? int64_t{1} : int64_t{0}});
    comm().all_reduce(ok, ReduceOp::kSum)->wait();
    if (ok.item<int64_t>() == g_dist->world_size()) {
      CommOptions options;
      options.timeout = std::chrono::seconds(60);
      g_nccl = make_nccl_communicator(options, g_dist->info());
    }
  }
  return g_nccl.get();
}

}  // namespace shardtune::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return shardtune::run_rank_main([](shardtune::DistContext& dist) {
    shardtune::testing::g_dist = &dist;
    shardtune::setup_rank(dist, shardtune::default_config());
    if (dist.rank() != 0) {
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
      listeners.Append(new shardtune::testing::RankFailurePrinter(dist.rank()));
    }
    const int rc = RUN_ALL_TESTS();
    if (rc != 0 && dist.world_size() > 1) {
      // Other ranks may wait in a collective this rank will not join.
      std::fprintf(stderr, "[rank %d] tests failed; ending every rank\n", dist.rank());
      return 1;  // run_rank_main ends every rank
    }
    // The communicators go before MPI does.
    shardtune::testing::g_nccl.reset();
    shardtune::testing::g_comm.reset();
    if (rc != 0) return 1;
    dist.barrier();
    return 0;
  });
}
