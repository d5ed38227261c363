// Per-rank model-state memory and step time by ZeRO stage, next to the
// analytic expectation, for a ~100M-parameter Llama-shaped model.
//
//   mpirun -np 2 shardtune_bench_zero [--steps 3] [--seq 128] [--dtype bfloat16|float32]
//
// Analytic bytes per parameter (P bytes per parameter and gradient element,
// 12 for the fp32 master weights and two moments, W ranks):
//   stage 0: 2P + 12   stage 1: 2P + 12/W   stage 2: P + (P + 12)/W   stage 3: (2P + 12)/W
// (with bf16, P = 2: 16, 4 + 12/W, 2 + 14/W, 16/W). Offload moves the 12/W to host
// memory; on a CPU-only machine both are host memory, so the total is the
// same and only the placement differs.
#include <mpi.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>

#include "shardtune/cli/rank_main.h"
#include "shardtune/core/strings.h"
#include "shardtune/model/transformer.h"
#include "shardtune/parallel/data_parallel.h"

namespace shardtune {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int run(DistContext& dist, const std::vector<std::string>& args) {
  int steps = 3;
  int64_t seq = 128;
  std::string dtype_name = "bfloat16";
  for (size_t i = 0; i + 1 < args.size(); i += 2) {
    if (args[i] == "--steps") steps = std::stoi(args[i + 1]);
    else if (args[i] == "--seq") seq = std::stoll(args[i + 1]);
    else if (args[i] == "--dtype") dtype_name = args[i + 1];
    else throw InputError(str_cat("unknown argument ", args[i]));
  }
  const torch::Dtype dtype = dtype_name == "float32" ? torch::kFloat32 : torch::kBFloat16;
  const double p_bytes = dtype == torch::kFloat32 ? 4.0 : 2.0;
  setup_rank(dist, default_config());
  auto comm = make_mpi_communicator(CommOptions{});
  const int world = comm->size();
  const ModelConfig cfg = model_config_from_json(
      {{"model_type", "llama"}, {"vocab_size", 8192}, {"hidden_size", 768}, {"intermediate_size", 2048},
       {"num_hidden_layers", 12}, {"num_attention_heads", 12}, {"num_key_value_heads", 4},
       {"max_position_embeddings", 1024}},
      "bench");
  const double n = static_cast<double>(parameter_count(cfg));
  if (dist.rank() == 0) {
    std::printf("# ZeRO benchmark: llama-shaped model, %.1fM parameters, %s, %d ranks, seq %ld, micro-batch 1, "
                "%d steps (mean of the last %d)\n",
                n / 1e6, dtype_name.c_str(), world, static_cast<long>(seq), steps, steps - 1);
    std::printf("%-14s %9s %9s %9s %9s %8s %8s %6s %8s %9s %9s %9s %9s\n", "config", "params", "grads", "optim",
                "total", "B/param", "expect", "ratio", "step(s)", "fwd+bwd", "exp.comm", "optim(s)", "peakRSS");
  }
  struct Run {
    int stage;
    bool offload;
  };
  for (const Run r : {Run{0, false}, Run{1, false}, Run{2, false}, Run{2, true}, Run{3, false}, Run{3, true}}) {
    auto model = make_causal_lm(cfg);
    model->init_weights(1);
    model->to(dtype);
    DataParallelOptions o;
    o.zero_stage = r.stage;
    o.offload_optimizer = r.offload;
    DataParallel dp(*model, *comm, o);
    double t_step = 0, t_fb = 0, t_comm = 0, t_opt = 0;
    for (int s = 0; s < steps; ++s) {
      torch::manual_seed(s * world + dist.rank());
      torch::Tensor ids = torch::randint(0, cfg.vocab_size, {1, seq + 1});
      MPI_Barrier(MPI_COMM_WORLD);
      const auto t0 = Clock::now();
      dp.begin_micro_step(true, true);
      torch::Tensor logits = model->forward(ids.slice(1, 0, seq));
      torch::nn::functional::cross_entropy(logits.reshape({-1, cfg.vocab_size}).to(torch::kFloat32),
                                           ids.slice(1, 1).reshape({-1}))
          .backward();
      dp.end_micro_step();
      const double fb = seconds_since(t0) - dp.exposed_comm_seconds();
      const auto t1 = Clock::now();
      dp.step(1e-4, 1.0);
      const double opt = seconds_since(t1);
      if (s > 0) {  // the first step warms up
        t_step += seconds_since(t0);
        t_fb += fb;
        t_comm += dp.exposed_comm_seconds();
        t_opt += opt;
      }
    }
    const int timed = std::max(1, steps - 1);
    const auto mem = dp.memory();
    const double per_param = static_cast<double>(mem.total()) / n;
    const double expect = r.stage == 0   ? 2 * p_bytes + 12
                          : r.stage == 1 ? 2 * p_bytes + 12.0 / world
                          : r.stage == 2 ? p_bytes + (p_bytes + 12.0) / world
                                         : (2 * p_bytes + 12.0) / world;
    // Host peak here; on a GPU the allocator's peak is the one that matters.
    const torch::Device device = model->parameters()[0].device();
    double peak = static_cast<double>(device.is_cuda() ? peak_device_memory_bytes(device) : peak_host_memory_bytes());
    MPI_Allreduce(MPI_IN_PLACE, &peak, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (dist.rank() == 0) {
      const std::string name = str_cat("stage ", r.stage, r.offload ? " offload" : "");
      std::printf("%-14s %8.0fM %8.0fM %8.0fM %8.0fM %8.2f %8.2f %6.3f %8.2f %9.2f %9.3f %9.3f %8.0fM\n", name.c_str(),
                  mem.params / 1e6, mem.grads / 1e6, mem.optimizer / 1e6, mem.total() / 1e6, per_param, expect,
                  per_param / expect, t_step / timed, t_fb / timed, t_comm / timed, t_opt / timed, peak / 1e6);
      std::fflush(stdout);
    }
  }
  if (dist.rank() == 0) {
    std::printf("# sizes are this rank's buffers as allocated (MB = 1e6 bytes); peakRSS is the largest rank's "
                "process peak since start, so it only grows down the table\n");
  }
  return kExitOk;
}

}  // namespace
}  // namespace shardtune

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  return shardtune::run_rank_main([&](shardtune::DistContext& dist) { return shardtune::run(dist, args); });
}
