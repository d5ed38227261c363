// Runs under mpirun to show that a failing rank ends every rank promptly with
// a non-zero exit code and a message, whatever the way it fails:
//   throw     rank 1 throws after a collective; the others wait in the next one
//   crash     rank 1 dies from SIGKILL; the others wait in a collective
//   timeout   rank 1 stays away from a collective; rank 0's wait times out (2 s)
//             (a small one, which runs on rank 0's own thread)
//   timeout_large  the same for a collective on the communication thread
//   stop      rank 1's process is stopped (SIGSTOP): it cannot even answer
//   mismatch  with checking on, rank 0 calls all_reduce and the others all_gather
#include <torch/torch.h>

#include <csignal>
#include <string>
#include <thread>

#include "shardtune/cli/rank_main.h"
#include "shardtune/comm/communicator.h"

using namespace shardtune;

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  return run_rank_main([&](DistContext& dist) {
    Config config = default_config({"comm.timeout_s=2"});
    if (mode == "mismatch") config.comm.check_collectives = true;
    setup_rank(dist, config);
    auto comm = make_communicator(config.comm, dist.info());

    torch::Tensor t = torch::ones({16});
    comm->all_reduce(t, ReduceOp::kSum)->wait();  // call #1: everyone takes part

    if (mode == "throw" && dist.rank() == 1) {
      throw Error("simulated failure on rank 1");
    }
    if (mode == "crash" && dist.rank() == 1) {
      std::raise(SIGKILL);
    }
    if ((mode == "timeout" || mode == "timeout_large") && dist.rank() == 1) {
      std::this_thread::sleep_for(std::chrono::seconds(60));
    }
    if (mode == "stop" && dist.rank() == 1) std::raise(SIGSTOP);  // the whole process halts
    if (mode == "mismatch") {
      if (dist.rank() == 0) {
        torch::Tensor x = torch::ones({7});
        comm->all_reduce(x, ReduceOp::kSum)->wait();
      } else {
        torch::Tensor out = torch::empty({8});
        const ShardRange own = shard_range(8, dist.world_size(), dist.rank());
        comm->all_gather(torch::ones({own.length}), out)->wait();
      }
    }
    if (mode == "timeout_large") t = torch::ones({1 << 20});  // 4 MiB
    comm->all_reduce(t, ReduceOp::kSum)->wait();  // call #2 for the others
    return 0;  // not reached when mode is valid
  });
}
