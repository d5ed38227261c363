#include "shardtune/parallel/data_parallel.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "shardtune/core/error.h"
#include "shardtune/model/transformer.h"
#include "shardtune/version.h"

#if SHARDTUNE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace shardtune {
namespace {

// The gradient accumulator of a leaf: a shared_ptr or an intrusive_ptr
// depending on the libtorch version.
using Accumulator = decltype(torch::autograd::impl::grad_accumulator(std::declval<const torch::autograd::Variable&>()));

bool no_decay_by_default(const std::string& name, const torch::Tensor& p) {
  return p.dim() < 2 || name.find("embed") != std::string::npos || name.find(".wte.") != std::string::npos ||
         name.find(".wpe.") != std::string::npos;
}

}  // namespace

struct DataParallel::Hooks {
  std::vector<Accumulator> accumulators;  // kept alive: they hold the hooks
};

DataParallel::DataParallel(torch::nn::Module& model, Communicator& comm, const DataParallelOptions& options)
    : comm_(comm), options_(options), hooks_(std::make_unique<Hooks>()) {
  if (options.zero_stage < 0 || options.zero_stage > 3) {
    throw InputError(str_cat("parallel.zero_stage ", options.zero_stage, " is not available (0, 1, 2, 3)"));
  }
  auto* lm = dynamic_cast<CausalLM*>(&model);
  if (options.zero_stage == 3 && lm == nullptr) {
    throw InputError("ZeRO stage 3 needs a CausalLM: it gathers and frees parameters block by block");
  }
  if (options.checkpoint_every < 0) {
    throw InputError(str_cat("activation checkpointing every ", options.checkpoint_every, " blocks is not available"));
  }
  if (options.zero_stage == 3 && options.checkpoint_every > 1) {
    throw InputError(str_cat("ZeRO stage 3 recomputes every block (it frees each block's parameters after its "
                             "forward); checkpointing every ", options.checkpoint_every, " blocks is not available"));
  }
  if (options.checkpoint_every > 0 && lm == nullptr) {
    throw InputError("activation checkpointing needs a CausalLM: it recomputes transformer blocks");
  }
  auto named = model.named_parameters();
  for (auto it = named.end(); it != named.begin();) {  // reverse registration order
    --it;
    if (!it->value().requires_grad()) continue;
    params_.push_back(it->value());
    names_.push_back(it->key());
  }
  if (params_.empty()) throw InputError("the model has no parameter that requires grad");
  const auto dtype = params_[0].scalar_type();
  const auto device = params_[0].device();
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].scalar_type() != dtype || params_[i].device() != device) {
      throw Error(str_cat("data parallel: parameter ", names_[i], " is ", c10::toString(params_[i].scalar_type()),
                          " on ", params_[i].device().str(), " but ", names_[0], " is ", c10::toString(dtype),
                          " on ", device.str(), "; trainable parameters must share one dtype and device"));
    }
    offsets_.push_back(numel_);
    numel_ += params_[i].numel();
    sizes_.push_back({params_[i].sizes().vec(), params_[i].numel()});
  }
  const int world = comm.size();
  padded_ = (numel_ + world - 1) / world * world;

  // Flat buffers; parameters and gradients become views of them.
  torch::NoGradGuard no_grad;
  const auto opts = params_[0].options();
  flat_param_ = torch::zeros({padded_}, opts);
  param_options_ = opts;
  // Stages 0 and 1 keep whole gradients, as views of one flat buffer; stages
  // 2 and 3 keep only their shard.
  if (options.zero_stage < 2) flat_grad_ = torch::zeros({padded_}, opts);
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor view = flat_param_.narrow(0, offsets_[i], params_[i].numel()).view(params_[i].sizes());
    view.copy_(params_[i]);
    params_[i].set_data(view);
    if (flat_grad_.defined()) {
      params_[i].mutable_grad() = flat_grad_.narrow(0, offsets_[i], params_[i].numel()).view(params_[i].sizes());
    } else {
      params_[i].mutable_grad() = torch::Tensor();
    }
  }
  // Every rank starts from rank 0's parameters.
  comm_.broadcast(flat_param_, 0)->wait();

  std::vector<int64_t> numels;
  for (const auto& p : params_) numels.push_back(p.numel());
  const int64_t elem = static_cast<int64_t>(flat_param_.element_size());
  buckets_ = assign_buckets(numels, elem, static_cast<int64_t>(options.first_bucket_mb * (1 << 20)),
                            static_cast<int64_t>(options.bucket_mb * (1 << 20)));
  bucket_of_.resize(params_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (size_t p : buckets_[b].params) bucket_of_[p] = b;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    Accumulator acc = torch::autograd::impl::grad_accumulator(params_[i]);
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_grad_ready(i);
          return outputs;
        }));
    hooks_->accumulators.push_back(std::move(acc));
  }

  // The optimizer state: everything (stage 0) or this rank's shard (stage 1).
  shard_ = options.zero_stage == 0 ? ShardRange{0, padded_} : shard_range(padded_, world, comm.rank());
  // Weight decay: the parts of the decayed parameters inside the shard.
  FlatAdamW::Ranges decay;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!options.decay_all && no_decay_by_default(names_[i], params_[i])) continue;
    const int64_t b = std::max(offsets_[i], shard_.offset);
    const int64_t e = std::min(offsets_[i] + params_[i].numel(), shard_.offset + shard_.length);
    if (b >= e) continue;
    if (!decay.empty() && decay.back().second == b - shard_.offset) {
      decay.back().second = e - shard_.offset;  // adjacent: one range
    } else {
      decay.emplace_back(b - shard_.offset, e - shard_.offset);
    }
  }
  if (options.zero_stage >= 2) grad_shard_ = torch::zeros({shard_.length}, opts);
  // The optimizer state on the parameters' device, or offloaded to host memory.
  auto state_options = torch::TensorOptions().dtype(torch::kFloat32);
  if (options.offload_optimizer) {
    state_options = state_options.device(torch::kCPU).pinned_memory(device.is_cuda());
  } else {
    state_options = state_options.device(device);
  }
  torch::Tensor master = torch::empty({shard_.length}, state_options);
  master.copy_(flat_param_.narrow(0, shard_.offset, shard_.length));
  adamw_ = std::make_unique<FlatAdamW>(master, std::move(decay), options.adamw);
  pending_.assign(buckets_.size(), 0);
  ready_.assign(buckets_.size(), false);
  staging_.resize(buckets_.size());

  if (options.zero_stage == 3) {
    // Units: each block's trainable parameters (consecutive in the flat
    // order), then the rest, in runs of consecutive parameters.
    const auto blocks = lm->blocks();
    num_blocks_ = blocks.size();
    std::vector<int> unit_of(params_.size(), static_cast<int>(num_blocks_));
    for (size_t b = 0; b < blocks.size(); ++b) {
      for (const auto& p : blocks[b]->parameters()) {
        for (size_t i = 0; i < params_.size(); ++i) {
          if (params_[i].unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) unit_of[i] = static_cast<int>(b);
        }
      }
    }
    units_.resize(num_blocks_ + 1);
    for (size_t i = 0; i < params_.size(); ++i) {
      Unit& u = units_[static_cast<size_t>(unit_of[i])];
      const int64_t lo = offsets_[i], hi = offsets_[i] + params_[i].numel();
      if (!u.ranges.empty() && u.ranges.back().second == lo) {
        u.ranges.back().second = hi;
      } else {
        u.ranges.emplace_back(lo, hi);
      }
      u.params.push_back(i);
    }
    // Each rank keeps its shard of the parameters; the flat buffer goes.
    param_shard_ = flat_param_.narrow(0, shard_.offset, shard_.length).clone();
    flat_param_ = torch::Tensor();
    for (size_t u = 0; u < units_.size(); ++u) free_unit(u);
    lm->set_block_runner([this](size_t block, const torch::Tensor& x, CausalLM::BlockFn fn) {
      return run_block_sharded(block, x, std::move(fn));
    });
    block_fns_.resize(num_blocks_);
    lm_ = lm;
  } else if (options.checkpoint_every > 0) {
    lm->set_block_runner([this](size_t block, const torch::Tensor& x, CausalLM::BlockFn fn) {
      return run_block_checkpointed(block, x, std::move(fn));
    });
    block_fns_.resize(lm->blocks().size());
    lm_ = lm;
  }
}

DataParallel::~DataParallel() {
  if (lm_ != nullptr) lm_->set_block_runner(nullptr);  // it calls this engine
}

void DataParallel::begin_micro_step(bool first, bool last) {
  std::lock_guard<std::mutex> lock(mu_);
  torch::NoGradGuard no_grad;
  if (first) exposed_comm_ = 0.0;
  if (first && grad_shard_.defined()) grad_shard_.zero_();
  if (first && flat_grad_.defined()) {
    flat_grad_.zero_();
    // Someone may have reset .grad (model.zero_grad()): point it back at the buffer.
    for (size_t i = 0; i < params_.size(); ++i) {
      torch::Tensor& g = params_[i].mutable_grad();
      const void* want = static_cast<char*>(flat_grad_.data_ptr()) + offsets_[i] * flat_grad_.element_size();
      if (!g.defined() || g.data_ptr() != want) {
        g = flat_grad_.narrow(0, offsets_[i], params_[i].numel()).view(params_[i].sizes());
      }
    }
  }
  last_ = last;
  if (!units_.empty()) ensure_gathered(num_blocks_);  // the root unit, for the whole micro-step
  // Stages 2 and 3 reduce every micro-step (it keeps no whole gradient to
  // accumulate into); stages 0 and 1 only the last.
  sync_ = last || options_.zero_stage >= 2;
  if (sync_) {
    for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = static_cast<int>(buckets_[b].params.size());
    std::fill(ready_.begin(), ready_.end(), false);
    next_bucket_ = 0;
    works_.clear();
    pieces_.clear();
  }
}

void DataParallel::on_grad_ready(size_t param) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!sync_) return;
  const size_t b = bucket_of_[param];
  if (grad_shard_.defined()) {
    // Stage 2: into the bucket's staging buffer, and the gradient is freed.
    torch::NoGradGuard no_grad;
    const BucketSpec& spec = buckets_[b];
    if (!staging_[b].defined()) staging_[b] = torch::zeros({spec.length}, param_options_);
    torch::Tensor& g = params_[param].mutable_grad();
    staging_[b].narrow(0, offsets_[param] - spec.offset, params_[param].numel()).copy_(g.reshape({-1}));
    g = torch::Tensor();
  }
  if (--pending_[b] == 0) {
    ready_[b] = true;
    launch_ready_buckets();
  }
}

void DataParallel::launch_ready_buckets() {
  // Buckets go out in order on every rank, whatever order they became ready in.
  while (next_bucket_ < buckets_.size() && ready_[next_bucket_]) launch_bucket(next_bucket_++);
}

void DataParallel::launch_bucket(size_t b) {
  const BucketSpec& spec = buckets_[b];
  if (!grad_shard_.defined()) {
    works_.push_back(comm_.all_reduce(flat_grad_.narrow(0, spec.offset, spec.length), ReduceOp::kAvg));
    return;
  }
  // Stage 2: rank r gets the part of the bucket inside its shard.
  if (!staging_[b].defined()) staging_[b] = torch::zeros({spec.length}, param_options_);
  std::vector<int64_t> counts(static_cast<size_t>(comm_.size()));
  int64_t mine_offset = 0;
  for (int r = 0; r < comm_.size(); ++r) {
    const ShardRange s = shard_range(padded_, comm_.size(), r);
    const int64_t lo = std::max(spec.offset, s.offset);
    const int64_t hi = std::min(spec.offset + spec.length, s.offset + s.length);
    counts[static_cast<size_t>(r)] = std::max<int64_t>(0, hi - lo);
    if (r == comm_.rank()) mine_offset = lo - s.offset;
  }
  const int64_t mine = counts[static_cast<size_t>(comm_.rank())];
  torch::Tensor reduced = torch::empty({mine}, param_options_);
  works_.push_back(comm_.reduce_scatter_counts(staging_[b], reduced, counts, ReduceOp::kAvg));
  if (mine > 0) pieces_.push_back({reduced, mine_offset});  // buckets outside the shard give nothing here
}

double DataParallel::end_micro_step() {
  std::vector<WorkPtr> works;
  std::vector<Piece> pieces;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!sync_) return 0.0;
    // Parameters that got no gradient this step leave their buckets waiting.
    std::fill(ready_.begin(), ready_.end(), true);
    launch_ready_buckets();
    works.swap(works_);
    pieces.swap(pieces_);
    sync_ = false;
  }
  const auto wait_start = std::chrono::steady_clock::now();
  for (auto& w : works) w->wait();
  exposed_comm_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - wait_start).count();
  torch::NoGradGuard no_grad;
  for (const auto& p : pieces) grad_shard_.narrow(0, p.shard_offset, p.reduced.numel()).add_(p.reduced);
  for (auto& s : staging_) s = torch::Tensor();
  if (!units_.empty()) free_unit(num_blocks_);
  if (!last_) return 0.0;
  if (grad_shard_.defined()) {
    // One reduction of the shards' squared norms.
    torch::Tensor sq = grad_shard_.to(torch::kFloat32).pow(2).sum().reshape({1});
    comm_.all_reduce(sq, ReduceOp::kSum)->wait();
    grad_norm_ = std::sqrt(sq.item<double>());
  } else {
    // Every rank holds the full averaged gradient (stages 0 and 1).
    grad_norm_ = std::sqrt(flat_grad_.to(torch::kFloat32).pow(2).sum().item<double>());
  }
  return grad_norm_;
}

void DataParallel::step(double lr, double max_grad_norm) {
  torch::NoGradGuard no_grad;
  const double coef = clip_coefficient(grad_norm_, max_grad_norm);
  torch::Tensor grad = grad_shard_.defined() ? grad_shard_ : flat_grad_.narrow(0, shard_.offset, shard_.length);
  adamw_->step(grad.to(adamw_->master().device()), lr, coef);
  publish_master();
}

void DataParallel::publish_master() {
  torch::NoGradGuard no_grad;
  if (param_shard_.defined()) {  // stage 3: the shard is all there is
    param_shard_.copy_(adamw_->master());
    return;
  }
  torch::Tensor own = flat_param_.narrow(0, shard_.offset, shard_.length);
  own.copy_(adamw_->master());
  if (options_.zero_stage >= 1 && comm_.size() > 1) comm_.all_gather(own, flat_param_)->wait();
}

// ------------------------------------------ recomputed blocks (stage 3, checkpointing)

namespace {

// The default generators' states (the CPU's, and the device's for a CUDA
// input): a recomputed block must draw the same dropout masks as its forward.
struct RngStates {
  torch::Tensor cpu, device;
};

RngStates rng_states(const torch::Device& device) {
  RngStates s;
  at::Generator cpu = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(cpu.mutex());
    s.cpu = cpu.get_state();
  }
  if (device.is_cuda()) {
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    s.device = gen.get_state();
  }
  return s;
}

void set_rng_states(const torch::Device& device, const RngStates& s) {
  at::Generator cpu = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(cpu.mutex());
    cpu.set_state(s.cpu);
  }
  if (device.is_cuda() && s.device.defined()) {
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s.device);
  }
}

// A block as one autograd node: forward without keeping activations (only
// the block's input, and the random generators' states); backward recomputes
// the block with grad from its input, under the same generator states, and
// differentiates it, so the parameters' gradients reach their accumulators
// (and so the buckets) as without recomputation. Stage 3 gathers the block
// before the recomputation (prefetching the one backward reaches next) and
// frees it after.
struct RecomputedBlock : torch::autograd::Function<RecomputedBlock> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, int64_t block,
                               int64_t engine) {
    ctx->saved_data["block"] = block;
    ctx->saved_data["engine"] = engine;
    const RngStates rng = rng_states(x.device());
    ctx->saved_data["rng_cpu"] = rng.cpu;
    if (rng.device.defined()) ctx->saved_data["rng_device"] = rng.device;
    ctx->save_for_backward({x});
    auto* dp = reinterpret_cast<DataParallel*>(engine);
    return dp->block_fns()[static_cast<size_t>(block)](x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto block = static_cast<size_t>(ctx->saved_data["block"].toInt());
    auto* dp = reinterpret_cast<DataParallel*>(ctx->saved_data["engine"].toInt());
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const bool sharded = dp->sharded_parameters();
    if (sharded) {
      dp->ensure_gathered(block);
      if (block > 0) dp->gather_unit(block - 1);  // prefetch the block backward reaches next
    }
    RngStates forward_rng;
    forward_rng.cpu = ctx->saved_data["rng_cpu"].toTensor();
    if (ctx->saved_data.count("rng_device") != 0) forward_rng.device = ctx->saved_data["rng_device"].toTensor();
    const RngStates now = rng_states(x.device());
    set_rng_states(x.device(), forward_rng);
    torch::Tensor input = x.detach().requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode with_grad(true);
      y = dp->block_fns()[block](input);
    }
    set_rng_states(x.device(), now);
    torch::autograd::backward({y}, {grad_out[0]});
    if (sharded) dp->free_unit(block);
    return {input.grad(), torch::Tensor(), torch::Tensor()};
  }
};

// The block's trainable parameters are not inputs of the autograd node, so
// its input must need a gradient for backward to reach it (with frozen
// embeddings, the first block's input does not).
torch::Tensor apply_recomputed(const torch::Tensor& x, size_t block, DataParallel* engine) {
  const torch::Tensor input = x.requires_grad() ? x : x.detach().requires_grad_(true);
  return RecomputedBlock::apply(input, static_cast<int64_t>(block), reinterpret_cast<int64_t>(engine));
}

}  // namespace

torch::Tensor DataParallel::run_block_checkpointed(size_t block, const torch::Tensor& x,
                                                   std::function<torch::Tensor(const torch::Tensor&)> fn) {
  // Evaluation (no grad) keeps nothing anyway, and blocks between the
  // checkpointed ones keep their activations.
  if (!torch::GradMode::is_enabled() || block % static_cast<size_t>(options_.checkpoint_every) != 0) return fn(x);
  block_fns_[block] = std::move(fn);
  return apply_recomputed(x, block, this);
}

// ---------------------------------------------------------------- stage 3

torch::Tensor DataParallel::run_block_sharded(size_t block, const torch::Tensor& x,
                                              std::function<torch::Tensor(const torch::Tensor&)> fn) {
  ensure_gathered(block);
  if (block + 1 < num_blocks_) gather_unit(block + 1);  // prefetch the next block
  block_fns_[block] = std::move(fn);
  torch::Tensor y = apply_recomputed(x, block, this);
  free_unit(block);
  return y;
}

void DataParallel::gather_unit(size_t u) {
  Unit& unit = units_[u];
  if (unit.gathered || !unit.pending.empty()) return;
  const int world = comm_.size();
  for (const auto& [lo, hi] : unit.ranges) {
    std::vector<int64_t> counts(static_cast<size_t>(world));
    torch::Tensor mine;
    for (int r = 0; r < world; ++r) {
      const ShardRange s = shard_range(padded_, world, r);
      const int64_t a = std::max(lo, s.offset), b = std::min(hi, s.offset + s.length);
      counts[static_cast<size_t>(r)] = std::max<int64_t>(0, b - a);
      if (r == comm_.rank()) {
        mine = b > a ? param_shard_.narrow(0, a - s.offset, b - a) : torch::empty({0}, param_options_);
      }
    }
    torch::Tensor buffer = torch::empty({hi - lo}, param_options_);
    unit.pending.push_back(comm_.all_gather_counts(mine, buffer, counts));
    unit.buffers.push_back(buffer);
  }
}

void DataParallel::ensure_gathered(size_t u) {
  Unit& unit = units_[u];
  if (unit.gathered) return;
  gather_unit(u);
  for (auto& w : unit.pending) w->wait();
  unit.pending.clear();
  torch::NoGradGuard no_grad;
  for (size_t i : unit.params) {
    // The range holding parameter i.
    for (size_t r = 0; r < unit.ranges.size(); ++r) {
      const auto [lo, hi] = unit.ranges[r];
      if (offsets_[i] >= lo && offsets_[i] < hi) {
        params_[i].set_data(unit.buffers[r].narrow(0, offsets_[i] - lo, sizes_[i].numel).view(sizes_[i].shape));
        break;
      }
    }
  }
  unit.gathered = true;
}

void DataParallel::free_unit(size_t u) {
  Unit& unit = units_[u];
  for (auto& w : unit.pending) w->wait();  // a prefetch still in flight
  unit.pending.clear();
  torch::NoGradGuard no_grad;
  for (size_t i : unit.params) params_[i].set_data(torch::empty({0}, param_options_));
  unit.buffers.clear();
  unit.gathered = false;
}

void DataParallel::gather_parameters() {
  if (units_.empty()) return;
  torch::NoGradGuard no_grad;
  // The whole flat buffer, as the stages that keep it: parameters become its views.
  torch::Tensor full = torch::empty({padded_}, param_options_);
  std::vector<int64_t> counts(static_cast<size_t>(comm_.size()));
  for (int r = 0; r < comm_.size(); ++r) counts[static_cast<size_t>(r)] = shard_range(padded_, comm_.size(), r).length;
  comm_.all_gather_counts(param_shard_, full, counts)->wait();
  for (auto& unit : units_) {
    for (auto& w : unit.pending) w->wait();
    unit.pending.clear();
    unit.buffers.clear();
    unit.gathered = false;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].set_data(full.narrow(0, offsets_[i], sizes_[i].numel).view(sizes_[i].shape));
  }
}

void DataParallel::begin_eval() {
  if (!units_.empty()) ensure_gathered(num_blocks_);
}

void DataParallel::end_eval() {
  if (!units_.empty()) free_unit(num_blocks_);
}

void DataParallel::release_parameters() {
  if (units_.empty()) return;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) params_[i].set_data(torch::empty({0}, param_options_));
}

std::vector<int64_t> DataParallel::param_numels() const {
  std::vector<int64_t> out;
  for (const auto& s : sizes_) out.push_back(s.numel);
  return out;
}

DataParallel::FlatState DataParallel::state_to_save() const {
  const ShardRange piece = shard_range(padded_, comm_.size(), comm_.rank());
  const int64_t begin = std::min(piece.offset, numel_);
  const int64_t end = std::min(piece.offset + piece.length, numel_);
  // The piece lies inside this rank's shard (stage 0: the whole buffer).
  const int64_t at = begin - shard_.offset;
  FlatState s;
  s.offset = begin;
  s.master = adamw_->master().narrow(0, at, end - begin);
  s.exp_avg = adamw_->exp_avg().narrow(0, at, end - begin);
  s.exp_avg_sq = adamw_->exp_avg_sq().narrow(0, at, end - begin);
  return s;
}

void DataParallel::load_state(const std::function<FlatState(int64_t offset, int64_t length)>& read, int64_t steps) {
  torch::NoGradGuard no_grad;
  // The padding past numel_ stays zero.
  const int64_t end = std::min(shard_.offset + shard_.length, numel_);
  const int64_t n = std::max<int64_t>(0, end - shard_.offset);
  const auto opts = adamw_->master().options();
  torch::Tensor master = torch::zeros({shard_.length}, opts), m = torch::zeros_like(master),
                v = torch::zeros_like(master);
  if (n > 0) {
    const FlatState s = read(shard_.offset, n);
    ST_CHECK(s.master.numel() == n && s.exp_avg.numel() == n && s.exp_avg_sq.numel() == n,
             "checkpoint read returned the wrong length");
    master.narrow(0, 0, n).copy_(s.master);
    m.narrow(0, 0, n).copy_(s.exp_avg);
    v.narrow(0, 0, n).copy_(s.exp_avg_sq);
  }
  adamw_->load_state(master, m, v, steps);
  publish_master();
}

int64_t peak_device_memory_bytes(const torch::Device& device) {
#if SHARDTUNE_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
#endif
  (void)device;
  return 0;
}

DataParallel::Memory DataParallel::memory() const {
  auto bytes = [](const torch::Tensor& t) { return t.defined() ? static_cast<int64_t>(t.nbytes()) : int64_t{0}; };
  Memory m;
  m.params = bytes(flat_param_) + bytes(param_shard_);
  m.grads = bytes(flat_grad_) + bytes(grad_shard_);
  m.optimizer = bytes(adamw_->master()) + bytes(adamw_->exp_avg()) + bytes(adamw_->exp_avg_sq());
  return m;
}

}  // namespace shardtune
