// The planner: what a training run will need per rank, and how fast it will
// go, without running it.
//
// Memory is counted as the engine allocates it (DataParallel::memory() for
// parameters, gradients and optimizer state; its bucket and gather buffers),
// plus an analytic estimate of the activations backward keeps. Step time
// adds the compute of each micro-step (on the CPU: a calibration run of one-
// and two-block versions of the model on this machine; on a GPU: the model's
// FLOPs at an assumed fraction of the device's peak), the optimizer step,
// and the communication that does not overlap with compute (per ZeRO stage,
// with a ring cost model and the device's bus bandwidth).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "shardtune/config/config.h"
#include "shardtune/model/model_config.h"

namespace shardtune {

// What the planner assumes of a device (defaults per kind, each overridable).
struct PlanDevice {
  std::string kind;             // "cpu", "h100", "h200", "a100-80gb", "a100-40gb", "l40s"
  double memory_bytes = 0;      // a GPU's memory, or the CPU node's (shared by its ranks)
  double peak_flops = 0;        // GPU: dense peak in the model's dtype
  double mfu = 0;               // GPU: the fraction of peak a training step reaches
  int ranks_per_node = 1;       // GPUs per node; on the CPU, ranks per node
  double busbw_intra = 0;       // bytes/s: collectives' bus bandwidth within a node
  double busbw_inter = 0;       // bytes/s: across nodes (per rank)
  double latency_s = 0;         // per collective
  double host_link = 0;         // bytes/s host<->device (offload); 0 on the CPU
  double host_adam_elems_per_s = 0;  // the offloaded AdamW step on the host (GPU kinds)
  int cores = 0;                // CPU: cores of this node
};

// Memory one rank may use: the GPU's, or the node's over the ranks on it.
double rank_memory_bytes(const PlanDevice& d, int ranks);

// The known kinds: "cpu" (this machine) and the GPUs named above.
std::vector<std::string> plan_device_kinds();
// Throws InputError for an unknown kind.
PlanDevice plan_device(const std::string& kind, int ranks);

// The CPU's measured rates (calibrate_cpu): seconds per micro-step outside
// the blocks and per block, forward and backward, and per AdamW element.
struct CpuCalibration {
  double rest_fwd_s = 0, rest_bwd_s = 0;
  double block_fwd_s = 0, block_bwd_s = 0;
  double adam_s_per_elem = 0;
  int threads = 1;
  int copies = 1;   // run side by side, as the ranks of a node
  std::string how;  // what was run
};

struct PlanInput {
  Config config;
  ModelConfig model;
  int ranks = 1;
  PlanDevice device;
  CpuCalibration calibration;  // device cpu
};

struct Plan {
  // Bytes per rank.
  struct Memory {
    double params = 0, grads = 0, optimizer = 0, activations = 0, buffers = 0, total = 0;
    double optimizer_on_host = 0;  // offloaded: the optimizer's bytes live in host memory
  } memory;
  int64_t trainable = 0, frozen = 0;
  int checkpoint_every = 0;
  int accumulation = 1;
  // Seconds per optimizer step.
  double compute_s = 0, optimizer_s = 0, comm_s = 0, exposed_comm_s = 0, offload_s = 0;
  double step_s = 0, tokens_per_s = 0;
  double flops_per_token = 0;  // training, recomputation included
  bool fits = false;
  int smallest_ranks = 0;  // 0: no rank count up to 65536 fits
  std::string note;        // what the figures assume
};

// Trainable and frozen parameters (LoRA: the adapters train, the base is
// frozen). Throws InputError for a LoRA target the family does not have.
void count_parameters(const ModelConfig& model, const LoraConfig& lora, int64_t* trainable, int64_t* frozen);

// The memory side alone (no timing): what `train` checks before it starts.
Plan::Memory plan_memory(const PlanInput& in);

// Memory and time. For the CPU, `in.calibration` must be filled.
Plan make_plan(const PlanInput& in);

// {"memory": {"params", "grads", "optimizer", "activations", "buffers",
// "total"}, "step_s", "tokens_per_s", "fits", "smallest_ranks", ...}.
nlohmann::json plan_to_json(const PlanInput& in, const Plan& plan);

// Times forward and backward of one micro-batch of one- and two-block
// versions of the model on this process's threads (a smaller stand-in, its
// times scaled by FLOPs, when the real width would take too long), and an
// AdamW step.
CpuCalibration calibrate_cpu(const PlanInput& in, int threads);

// The model config a run of `config` builds: model.config, model.init (HF
// folder or GGUF), a resumed checkpoint, or model.arch with its sizes
// (vocabulary data_vocab when model.vocab_size is 0).
ModelConfig planned_model_config(const Config& config, int64_t data_vocab);

}  // namespace shardtune
