#include "shardtune/parallel/data_parallel.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cmath>

#include "shardtune/core/error.h"

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
  if (options.zero_stage != 0 && options.zero_stage != 1) {
    throw InputError(str_cat("parallel.zero_stage ", options.zero_stage, " is not available (0, 1)"));
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
  }
  const int world = comm.size();
  padded_ = (numel_ + world - 1) / world * world;

  // Flat buffers; parameters and gradients become views of them.
  torch::NoGradGuard no_grad;
  const auto opts = params_[0].options();
  flat_param_ = torch::zeros({padded_}, opts);
  flat_grad_ = torch::zeros({padded_}, opts);
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor view = flat_param_.narrow(0, offsets_[i], params_[i].numel()).view(params_[i].sizes());
    view.copy_(params_[i]);
    params_[i].set_data(view);
    params_[i].mutable_grad() = flat_grad_.narrow(0, offsets_[i], params_[i].numel()).view(params_[i].sizes());
  }
  // Every rank starts from rank 0's parameters.
  comm_.broadcast(flat_param_, 0)->wait();

  std::vector<int64_t> numels;
  for (const auto& p : params_) numels.push_back(p.numel());
  const int64_t elem = static_cast<int64_t>(flat_grad_.element_size());
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
  torch::Tensor decay = torch::zeros({padded_}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  for (size_t i = 0; i < params_.size(); ++i) {
    const bool d = options.decay_all || !no_decay_by_default(names_[i], params_[i]);
    if (d) decay.narrow(0, offsets_[i], params_[i].numel()).fill_(1.0);
  }
  adamw_ = std::make_unique<FlatAdamW>(flat_param_.narrow(0, shard_.offset, shard_.length).to(torch::kFloat32).clone(),
                                       decay.narrow(0, shard_.offset, shard_.length).clone(), options.adamw);
  pending_.assign(buckets_.size(), 0);
  ready_.assign(buckets_.size(), false);
}

DataParallel::~DataParallel() = default;

void DataParallel::begin_micro_step(bool first, bool last) {
  std::lock_guard<std::mutex> lock(mu_);
  if (first) {
    torch::NoGradGuard no_grad;
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
  sync_ = last;
  if (last) {
    for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = static_cast<int>(buckets_[b].params.size());
    std::fill(ready_.begin(), ready_.end(), false);
    next_bucket_ = 0;
    works_.clear();
  }
}

void DataParallel::on_grad_ready(size_t param) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!sync_) return;
  const size_t b = bucket_of_[param];
  if (--pending_[b] == 0) {
    ready_[b] = true;
    launch_ready_buckets();
  }
}

void DataParallel::launch_ready_buckets() {
  // Buckets go out in order on every rank, whatever order they became ready in.
  while (next_bucket_ < buckets_.size() && ready_[next_bucket_]) {
    const BucketSpec& b = buckets_[next_bucket_];
    works_.push_back(comm_.all_reduce(flat_grad_.narrow(0, b.offset, b.length), ReduceOp::kAvg));
    ++next_bucket_;
  }
}

double DataParallel::finish_backward() {
  std::vector<WorkPtr> works;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ST_CHECK(sync_, "finish_backward outside a last micro-step");
    // Parameters that got no gradient this step leave their buckets waiting.
    std::fill(ready_.begin(), ready_.end(), true);
    launch_ready_buckets();
    works.swap(works_);
    sync_ = false;
  }
  for (auto& w : works) w->wait();
  // Every rank holds the full averaged gradient (stages 0 and 1).
  grad_norm_ = std::sqrt(flat_grad_.to(torch::kFloat32).pow(2).sum().item<double>());
  return grad_norm_;
}

void DataParallel::step(double lr, double max_grad_norm) {
  torch::NoGradGuard no_grad;
  const double coef = clip_coefficient(grad_norm_, max_grad_norm);
  adamw_->step(flat_grad_.narrow(0, shard_.offset, shard_.length), lr, coef);
  torch::Tensor own = flat_param_.narrow(0, shard_.offset, shard_.length);
  own.copy_(adamw_->master());
  if (options_.zero_stage >= 1 && comm_.size() > 1) comm_.all_gather(own, flat_param_)->wait();
}

DataParallel::Memory DataParallel::memory() const {
  Memory m;
  m.params = padded_ * static_cast<int64_t>(flat_param_.element_size());
  m.grads = padded_ * static_cast<int64_t>(flat_grad_.element_size());
  m.optimizer = shard_.length * 4 * 3;  // fp32 master, m, v
  return m;
}

}  // namespace shardtune
