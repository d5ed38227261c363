// Data parallelism: gradient reduction in buckets overlapped with backward,
// accumulation, and the optimizer step over flat shards (ZeRO stage 0 or 1).
//
// The trainable parameters (requires_grad) are laid out in one flat buffer in
// reverse registration order (the order backward produces their gradients),
// padded to a multiple of the world size; each parameter's data becomes a
// view of it, and its .grad a view of a flat gradient buffer of the same
// layout. So the flat index does not depend on the world size, and a shard
// is a contiguous (offset, length) range of it.
//
// Buckets are consecutive ranges of the flat gradient buffer
// (assign_buckets). A hook on each parameter's gradient accumulator counts it
// ready once autograd has accumulated its gradient; when a bucket's last
// parameter is ready its all_reduce(avg) is issued at once, in bucket order,
// while backward goes on. Parameters that got no gradient in a step keep
// zeros: their buckets are issued when backward ends, still in order, so
// every rank issues the same collectives.
//
//   stage 0  every rank keeps the full fp32 master weights and moments
//   stage 1  each rank keeps, and updates, only its shard of them; the
//            updated parameters are all_gather-ed back
//   stage 2  as 1, and gradients are not kept whole: each parameter's
//            gradient is copied into its bucket and freed as soon as autograd
//            has produced it, and each bucket is reduce-scattered (every
//            micro-step) into this rank's gradient shard, where micro-steps
//            accumulate. The global norm is one all_reduce of the shards'
//            squared norms.
//   stage 3  as 2, and parameters are sharded too: each rank stores only its
//            shard. Each transformer block is a unit whose parameters are
//            gathered before its forward (the next block's gather is issued
//            first, so it overlaps) and freed after; in backward the block is
//            gathered again, recomputed and differentiated, its gradients
//            reduce-scattered, and freed. The remaining parameters
//            (embeddings, final norm, output) form one unit gathered for the
//            whole micro-step. Needs a CausalLM (its blocks); frozen
//            parameters stay whole on every rank. gather_parameters() puts
//            the full parameters back into the model (for export or checks).
//
// The flat layout requires every trainable parameter to share one dtype and
// device. Do not call model.zero_grad(): the engine zeroes the gradient
// buffer at the first micro-step of each step. With offload_optimizer the
// fp32 master weights and moments live in host memory (pinned when the
// parameters are on a GPU) and the step runs there on the CPU's threads.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "shardtune/comm/communicator.h"
#include "shardtune/optim/adamw.h"
#include "shardtune/parallel/buckets.h"

namespace shardtune {

class CausalLM;

// Peak bytes the CUDA caching allocator has handed out on device since start
// (0 for a CPU device or a build without CUDA). With peak_host_memory_bytes
// (core/strings.h), the measured side of the memory accounting.
int64_t peak_device_memory_bytes(const torch::Device& device);

// The forward function of each block of the current micro-step (stage 3,
// and the blocks that activation checkpointing recomputes).
using CausalLMBlockFns = std::vector<std::function<torch::Tensor(const torch::Tensor&)>>;

struct DataParallelOptions {
  int zero_stage = 0;            // 0, 1, 2 or 3
  bool offload_optimizer = false;
  double first_bucket_mb = 1.0;  // the first bucket closes early so communication starts sooner
  double bucket_mb = 25.0;
  AdamWOptions adamw;
  // Weight decay for biases, norm scales and embeddings too (default: off for them).
  bool decay_all = false;
  // Activation checkpointing (needs a CausalLM): 0 keeps every activation
  // for backward; n > 0 keeps only the input of every n-th block (0, n, 2n,
  // ...) and recomputes that block in backward, with the random generators
  // as in its forward, so losses and gradients are those without it. Stage 3
  // always recomputes every block (0 or 1).
  int checkpoint_every = 0;
};

class DataParallel {
 public:
  DataParallel(torch::nn::Module& model, Communicator& comm, const DataParallelOptions& options);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Before each micro-step's forward. `first` starts a new optimizer step
  // (gradients are zeroed); during a micro-step that is not `last`, gradients
  // only accumulate locally: no communication.
  void begin_micro_step(bool first, bool last);

  // After each micro-step's backward. After the last one it issues the
  // buckets still waiting (their parameters got no gradient: zeros), waits
  // for every reduction and returns the global gradient norm; otherwise 0.
  double end_micro_step();

  // Clips to max_grad_norm (<= 0: no clipping) and takes the AdamW step at lr;
  // afterwards every rank holds the updated parameters.
  void step(double lr, double max_grad_norm);

  // Stage 3: every rank's model gets its full parameters (a collective);
  // training may go on afterwards. Other stages: nothing to do.
  void gather_parameters();

  // Stage 3: the parameters outside the blocks (embeddings, final norm,
  // output) are gathered for a forward that is not a training micro-step
  // (evaluation, under NoGradGuard) and freed after it; every rank must run
  // the same forwards in between. Other stages: nothing to do.
  void begin_eval();
  void end_eval();

  // Stage 3: frees what gather_parameters() gathered. Other stages: nothing.
  void release_parameters();

  // ---- Checkpoints.
  // The optimizer state of one range of the flat index (1-D float32 each).
  struct FlatState {
    int64_t offset = 0;
    torch::Tensor master, exp_avg, exp_avg_sq;
  };
  // This rank's piece to save: the range shard_range(padded, world, rank)
  // clipped to num_params(), under every stage (stage 0 holds the whole
  // state and saves its piece), so the pieces of all ranks tile the flat
  // index once.
  FlatState state_to_save() const;
  int64_t optimizer_steps() const { return adamw_->steps(); }
  // Replaces the optimizer state with a checkpoint's: read(offset, length)
  // returns that range of the flat index (as saved by any world size), for
  // this rank's shard. The parameters become the master weights (cast to
  // their dtype). A collective: every rank calls it.
  void load_state(const std::function<FlatState(int64_t offset, int64_t length)>& read, int64_t steps);

  int64_t num_params() const { return numel_; }
  // Each trainable parameter's element count, in flat order (param_names()).
  std::vector<int64_t> param_numels() const;
  const std::vector<BucketSpec>& buckets() const { return buckets_; }
  const std::vector<std::string>& param_names() const { return names_; }  // flat order
  ShardRange shard() const { return shard_; }
  // Bytes of parameters, gradients and optimizer state this rank holds: the
  // sizes of the engine's buffers as allocated (the optimizer's on the host
  // when offloaded).
  struct Memory {
    int64_t params = 0, grads = 0, optimizer = 0;
    int64_t total() const { return params + grads + optimizer; }
  };
  Memory memory() const;

  // Seconds the last step spent waiting for gradient reductions after
  // backward: the communication that did not overlap with compute.
  double exposed_comm_seconds() const { return exposed_comm_; }

 private:
  void on_grad_ready(size_t param);
  void launch_ready_buckets();  // with mu_ held
  void launch_bucket(size_t b);  // with mu_ held
  // The parameters become the master weights: this rank's shard is copied
  // in (cast to the parameters' dtype), then gathered (stages 1 and 2).
  void publish_master();

  Communicator& comm_;
  DataParallelOptions options_;
  std::vector<torch::Tensor> params_;  // flat order
  std::vector<std::string> names_;
  std::vector<int64_t> offsets_;
  struct Shape {
    std::vector<int64_t> shape;
    int64_t numel;
  };
  std::vector<Shape> sizes_;  // each parameter's shape (stage 3 frees the data)
  int64_t numel_ = 0;
  int64_t padded_ = 0;
  torch::Tensor flat_param_, flat_grad_;
  std::vector<BucketSpec> buckets_;
  std::vector<size_t> bucket_of_;
  ShardRange shard_;
  std::unique_ptr<FlatAdamW> adamw_;
  double grad_norm_ = 0.0;
  double exposed_comm_ = 0.0;

  // Per step.
  std::mutex mu_;
  bool sync_ = false;
  std::vector<int> pending_;
  std::vector<bool> ready_;
  size_t next_bucket_ = 0;
  bool last_ = false;
  std::vector<WorkPtr> works_;
  // Stage 2: a bucket's staging buffer, and where its reduced piece goes.
  std::vector<torch::Tensor> staging_;
  struct Piece {
    torch::Tensor reduced;
    int64_t shard_offset;
  };
  std::vector<Piece> pieces_;
  torch::Tensor grad_shard_;

  struct Hooks;
  std::unique_ptr<Hooks> hooks_;

  // Stage 3.
 public:
  struct Unit {
    std::vector<std::pair<int64_t, int64_t>> ranges;  // [begin, end) of the flat index
    std::vector<size_t> params;
    std::vector<torch::Tensor> buffers;  // gathered ranges
    std::vector<WorkPtr> pending;
    bool gathered = false;
  };
  // Used by the block function (data_parallel.cpp).
  void gather_unit(size_t u);  // issues the gathers (no wait)
  void ensure_gathered(size_t u);
  void free_unit(size_t u);
  CausalLMBlockFns& block_fns() { return block_fns_; }
  bool sharded_parameters() const { return !units_.empty(); }

 private:
  torch::Tensor run_block_sharded(size_t block, const torch::Tensor& x, std::function<torch::Tensor(const torch::Tensor&)> fn);
  torch::Tensor run_block_checkpointed(size_t block, const torch::Tensor& x,
                                       std::function<torch::Tensor(const torch::Tensor&)> fn);
  CausalLM* lm_ = nullptr;  // whose block runner calls this engine
  std::vector<Unit> units_;  // one per block, then the root unit
  size_t num_blocks_ = 0;
  torch::Tensor param_shard_;
  torch::TensorOptions param_options_;
  CausalLMBlockFns block_fns_;
};

}  // namespace shardtune
