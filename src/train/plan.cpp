#include "shardtune/train/plan.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"
#include "shardtune/data/dataset.h"
#include "shardtune/dist/dist.h"
#include "shardtune/formats/gguf.h"
#include "shardtune/model/gguf_model.h"
#include "shardtune/model/loss.h"
#include "shardtune/model/transformer.h"
#include "shardtune/optim/adamw.h"

#include "model_setup.h"
#include "train_common.h"

namespace shardtune {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

double host_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kb = 0;
  while (f >> key >> kb) {
    if (key == "MemTotal:") return kb * 1024.0;
    f.ignore(256, '\n');
  }
  return 0;
}

// Adapter parameters on one Linear of in x out: A is r x in, B is out x r.
int64_t lora_params(int64_t in, int64_t out, int64_t r) { return r * (in + out); }

}  // namespace

double rank_memory_bytes(const PlanDevice& d, int ranks) {
  if (d.kind != "cpu") return d.memory_bytes;
  return d.memory_bytes / std::max(1, std::min(ranks, d.ranks_per_node));
}

std::vector<std::string> plan_device_kinds() { return {"cpu", "h100", "h200", "a100-80gb", "a100-40gb", "l40s"}; }

PlanDevice plan_device(const std::string& kind, int ranks) {
  PlanDevice d;
  d.kind = kind;
  if (kind == "cpu") {
    // This machine: its memory shared by the ranks on it; collectives over
    // shared memory at what shardtune_bench_comm measures on a small node
    // (about 3 GB/s bus bandwidth at 1-64 MiB on 2 cores), across nodes a
    // 100 Gb/s network.
    d.cores = cores_on_node();
    d.ranks_per_node = std::max(1, ranks);  // all on this machine, unless told otherwise
    d.memory_bytes = host_memory_bytes();
    d.busbw_intra = 3e9;
    d.busbw_inter = 10e9;
    d.latency_s = 10e-6;
    return d;
  }
  // GPUs: dense bf16 peaks from the data sheets; an NVLink node of 8 (4 for
  // the L40S, which has none: PCIe), 400 Gb/s InfiniBand per GPU across
  // nodes (about 40 GB/s of bus bandwidth), PCIe 5 (4) for offload.
  d.ranks_per_node = 8;
  d.mfu = 0.40;
  d.latency_s = 20e-6;
  d.host_adam_elems_per_s = 2e9;
  d.busbw_inter = 40e9;
  if (kind == "h100") {
    d.memory_bytes = 80e9, d.peak_flops = 989.4e12, d.busbw_intra = 360e9, d.host_link = 50e9;
  } else if (kind == "h200") {
    d.memory_bytes = 141e9, d.peak_flops = 989.4e12, d.busbw_intra = 360e9, d.host_link = 50e9;
  } else if (kind == "a100-80gb") {
    d.memory_bytes = 80e9, d.peak_flops = 312e12, d.busbw_intra = 230e9, d.host_link = 25e9;
    d.busbw_inter = 20e9;
  } else if (kind == "a100-40gb") {
    d.memory_bytes = 40e9, d.peak_flops = 312e12, d.busbw_intra = 230e9, d.host_link = 25e9;
    d.busbw_inter = 20e9;
  } else if (kind == "l40s") {
    d.memory_bytes = 48e9, d.peak_flops = 362e12, d.busbw_intra = 20e9, d.host_link = 25e9;
    d.ranks_per_node = 4, d.busbw_inter = 20e9;
  } else {
    throw InputError(str_cat("--device ", kind, ": not a known device (", join(plan_device_kinds(), ", "), ")"));
  }
  return d;
}

void count_parameters(const ModelConfig& c, const LoraConfig& lora, int64_t* trainable, int64_t* frozen) {
  const int64_t total = parameter_count(c);
  if (lora.rank <= 0) {
    *trainable = total;
    *frozen = 0;
    return;
  }
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t f = c.intermediate_size, r = lora.rank;
  int64_t per_layer = 0;
  for (const std::string& t : lora_targets(lora, c)) {
    int64_t n = -1;
    if (c.family == Family::kGpt2) {
      if (t == "c_attn") n = lora_params(h, 3 * h, r);
      if (t == "c_proj") n = lora_params(h, h, r) + lora_params(f, h, r);  // attention's and the MLP's
      if (t == "c_fc") n = lora_params(h, f, r);
    } else {
      if (t == "q_proj") n = lora_params(h, q, r);
      if (t == "k_proj" || t == "v_proj") n = lora_params(h, kv, r);
      if (t == "o_proj") n = lora_params(q, h, r);
      if (t == "gate_proj" || t == "up_proj") n = lora_params(h, f, r);
      if (t == "down_proj") n = lora_params(f, h, r);
      if (c.arch->fused_qkv && t == "qkv_proj") n = lora_params(h, q + 2 * kv, r);
      if (c.arch->fused_qkv && (t == "q_proj" || t == "k_proj" || t == "v_proj")) n = -1;
      if (c.arch->fused_gate_up && t == "gate_up_proj") n = lora_params(h, 2 * f, r);
      if (c.arch->fused_gate_up && (t == "gate_proj" || t == "up_proj")) n = -1;
    }
    if (n < 0) throw InputError(str_cat("model.lora.targets: ", t, " is not a layer of a ", c.model_type, " model"));
    per_layer += n;
  }
  *trainable = per_layer * c.num_layers;
  *frozen = total;
}

namespace {

struct Sizes {
  int64_t trainable = 0, frozen = 0, padded = 0, shard = 0;
  double elem = 4;  // bytes per parameter (and activation)
  int stage = 0, world = 1, every = 0;
  int64_t tokens = 0;  // per micro-batch
  int64_t blocks_recomputed = 0;
};

Sizes sizes_of(const PlanInput& in) {
  Sizes s;
  count_parameters(in.model, in.config.model.lora, &s.trainable, &s.frozen);
  s.world = std::max(1, in.ranks);
  s.padded = ceil_div(s.trainable, s.world) * s.world;
  s.shard = s.padded / s.world;
  s.elem = in.config.model.dtype == "bfloat16" ? 2 : 4;
  s.stage = static_cast<int>(in.config.parallel.zero_stage);
  s.every = static_cast<int>(checkpoint_every(in.config));
  s.tokens = in.config.data.micro_batch * in.config.data.seq_len;
  s.blocks_recomputed = s.every > 0 ? ceil_div(in.model.num_layers, s.every) : 0;
  return s;
}

// Elements per token that backward keeps for one block (inputs of the
// matrix products, the attention's q, k, v and output, norms' inputs,
// the MLP's intermediate activations), with fused attention (no
// seq x seq scores kept) except where the family's attention has no fused
// kernel: soft-capped scores (gemma2) keep, per query and head, three
// values per key (tanh's output, the capped scores, the float32 softmax;
// a fourth, the softmax cast back, when elements are narrower than
// float32); measured on the CPU: 3.2 per layer. Sandwich norms keep the
// inputs of two more norms; q/k norms keep q's and k's.
double block_elems_per_token(const ModelConfig& c, int64_t seq, double elem) {
  const double h = static_cast<double>(c.hidden_size), f = static_cast<double>(c.intermediate_size);
  const double q = static_cast<double>(c.num_heads * c.head_dim), kv = static_cast<double>(c.num_kv_heads * c.head_dim);
  if (c.family == Family::kGpt2) return 9 * h + 2 * f;
  double n = 6 * h + 5 * q + 4 * kv + 4 * f;
  if (c.arch->norms == NormPlacement::kSandwich) n += 2 * h;
  if (c.arch->qk_norm != QkNorm::kNone) n += q + kv;
  if (c.attn_softcap > 0) {
    n += static_cast<double>(c.num_heads) * static_cast<double>(seq) * (3 + (elem < 4 ? 1 : 0));
  }
  return n;
}

double block_params(const ModelConfig& c) {
  ModelConfig one = c;
  one.num_layers = 1;
  ModelConfig none = c;
  none.num_layers = 0;
  return static_cast<double>(parameter_count(one) - parameter_count(none));
}

}  // namespace

Plan::Memory plan_memory(const PlanInput& in) {
  const Sizes s = sizes_of(in);
  const ModelConfig& c = in.model;
  const Config& cfg = in.config;
  Plan::Memory m;
  const double e = s.elem;
  // The engine's flat buffers (DataParallel::memory()), and frozen weights
  // whole on every rank.
  m.params = static_cast<double>(s.stage == 3 ? s.shard : s.padded) * e + static_cast<double>(s.frozen) * e;
  m.grads = static_cast<double>(s.stage >= 2 ? s.shard : s.padded) * e;
  const double opt = static_cast<double>(s.stage == 0 ? s.padded : s.shard) * 12.0;  // fp32 master + 2 moments
  if (cfg.optim.offload == "cpu" && in.device.kind != "cpu") {
    m.optimizer_on_host = opt;
  }
  m.optimizer = opt;
  // Buffers: stage 2-3 stage each bucket before its reduce-scatter (two in
  // flight); stage 3 holds the parameters outside the blocks for the whole
  // micro-step, and two blocks (the one running, the one prefetched).
  const double bucket = std::min(cfg.parallel.bucket_mb * 1048576.0, static_cast<double>(s.padded) * e);
  if (s.stage >= 2) m.buffers += 2 * bucket;
  if (s.stage == 3) {
    const double per_block = cfg.model.lora.rank > 0 ? 0 : block_params(c) * e;
    const double outside = static_cast<double>(s.trainable) * e - per_block * static_cast<double>(c.num_layers);
    m.buffers += std::max(0.0, outside) + 2 * per_block;
  }
  // Activations of one micro-batch.
  const double t = static_cast<double>(s.tokens);
  const double h = static_cast<double>(c.hidden_size), v = static_cast<double>(c.vocab_size);
  const double per_block = t * block_elems_per_token(c, cfg.data.seq_len, e) * e;
  const double layers = static_cast<double>(c.num_layers);
  double blocks = per_block * layers;
  if (s.every > 0) {
    const double recomputed = static_cast<double>(s.blocks_recomputed);
    // Recomputed blocks keep their input; backward holds one of them whole.
    blocks = per_block * (layers - recomputed) + recomputed * t * h * e + per_block;
  }
  // Embedding output, final norm, and the loss's buffers: float32 on the CPU
  // fuses the projection with the loss into one [vocab, tokens] buffer
  // (loss.h); otherwise logits, their float32 log-softmax and its gradient
  // (plus a float32 copy of bfloat16 logits).
  const bool fused_loss = in.device.kind == "cpu" && e == 4;
  const double head = t * (3 * h * e + v * (fused_loss ? 4 : e + 8 + (e < 4 ? 4 : 0)));
  // Document masking: an attention bias [micro-batch, seq, seq] per
  // forward for each kind of layer the model has (global, windowed).
  double bias = 0;
  if (dataset_options(cfg.data).document_mask) {
    bool kinds[2] = {false, false};
    for (int64_t l = 0; l < c.num_layers; ++l) kinds[layer_windowed(c, l) ? 1 : 0] = true;
    const double seq = static_cast<double>(cfg.data.seq_len);
    bias = static_cast<double>(cfg.data.micro_batch) * seq * seq * e * (kinds[0] + kinds[1]);
  }
  m.activations = blocks + head + bias;
  const double on_device_optimizer = m.optimizer - m.optimizer_on_host;
  m.total = m.params + m.grads + on_device_optimizer + m.activations + m.buffers;
  return m;
}

Plan make_plan(const PlanInput& in) {
  Plan p;
  const Sizes s = sizes_of(in);
  const ModelConfig& c = in.model;
  const Config& cfg = in.config;
  const PlanDevice& d = in.device;
  p.memory = plan_memory(in);
  p.trainable = s.trainable;
  p.frozen = s.frozen;
  p.checkpoint_every = s.every;
  const int64_t per_round = cfg.data.micro_batch * s.world;
  p.accumulation = static_cast<int>(accumulation_steps(cfg.data, s.world));
  const double layers = static_cast<double>(c.num_layers);
  const double recomputed = static_cast<double>(s.blocks_recomputed);

  // FLOPs per token: 6 N + attention, plus the forward of recomputed blocks.
  const double train_flops = training_flops_per_token(c, cfg.data.seq_len);
  const double block_fwd_flops = 2 * block_params(c) + 4.0 * static_cast<double>(cfg.data.seq_len * c.num_heads * c.head_dim);
  p.flops_per_token = train_flops + recomputed * block_fwd_flops;

  // Compute per micro-step.
  double micro = 0, bwd = 0, fwd = 0;
  if (d.kind == "cpu") {
    const CpuCalibration& k = in.calibration;
    fwd = k.rest_fwd_s + layers * k.block_fwd_s;
    bwd = k.rest_bwd_s + layers * k.block_bwd_s + recomputed * k.block_fwd_s;
    // Ranks beyond the cores share them (unless the calibration ran them
    // side by side already).
    const double demand = static_cast<double>(std::min(s.world, d.ranks_per_node) * k.threads);
    const double slow = std::max(1.0, demand / std::max(1, d.cores) / k.copies);
    fwd *= slow;
    bwd *= slow;
  } else {
    const double rate = d.peak_flops * d.mfu;
    const double t = static_cast<double>(s.tokens);
    fwd = t * train_flops / 3 / rate;
    bwd = t * (2 * train_flops / 3 + recomputed * block_fwd_flops) / rate;
  }
  micro = fwd + bwd;
  p.compute_s = micro * p.accumulation;

  // Optimizer step over this rank's part.
  const double opt_elems = static_cast<double>(s.stage == 0 ? s.padded : s.shard);
  const bool offload = cfg.optim.offload == "cpu";
  if (d.kind == "cpu") {
    p.optimizer_s = opt_elems * in.calibration.adam_s_per_elem;
  } else if (offload) {
    p.optimizer_s = opt_elems / d.host_adam_elems_per_s;
    // Gradients to the host and parameters back, once per step.
    p.offload_s = 2 * opt_elems * s.elem / d.host_link;
  } else {
    p.optimizer_s = opt_elems * 28.0 / (2e12);  // memory-bound: ~28 B per element at ~2 TB/s
  }

  // Communication: ring costs over the bus bandwidth of the ranks' span.
  const int w = s.world;
  if (w > 1) {
    const double bw = w <= d.ranks_per_node ? d.busbw_intra : d.busbw_inter;
    const double frac = static_cast<double>(w - 1) / w;
    const double bytes = static_cast<double>(s.padded) * s.elem;
    const double nbuckets = std::max(1.0, std::ceil(bytes / (cfg.parallel.bucket_mb * 1048576.0)));
    // Latency per collective grows with the depth of a tree over the ranks.
    const double alpha = d.latency_s * std::ceil(std::log2(static_cast<double>(w)));
    auto all_reduce = [&](double b, double n) { return 2 * frac * b / bw + n * alpha; };
    auto half = [&](double b, double n) { return frac * b / bw + n * alpha; };  // reduce-scatter, all-gather
    const double last_bucket = std::min(bytes, cfg.parallel.bucket_mb * 1048576.0);
    double grads = 0, after = 0, exposed = 0;
    if (s.stage <= 1) {
      grads = all_reduce(bytes, nbuckets);
      if (s.stage == 1) after = half(bytes, 1);
      // Overlapped with the last micro-step's backward, but for the last bucket.
      exposed = std::max(0.0, grads - bwd) + all_reduce(last_bucket, 1) + after;
      p.comm_s = grads + after;
    } else if (s.stage == 2) {
      grads = half(bytes, nbuckets) * p.accumulation;
      after = half(bytes, 1);
      exposed = p.accumulation * (std::max(0.0, grads / p.accumulation - bwd) + half(last_bucket, 1)) + after;
      p.comm_s = grads + after;
    } else {
      // Per micro-step: gather every block for forward and again for
      // backward, gather the rest once, reduce-scatter the gradients.
      const double blocks = cfg.model.lora.rank > 0 ? 0 : block_params(c) * layers * s.elem;
      const double gather_fwd = half(bytes, layers + 1), gather_bwd = half(blocks, layers);
      const double rs = half(bytes, nbuckets);
      exposed = p.accumulation * (std::max(0.0, gather_fwd - fwd) + std::max(0.0, gather_bwd + rs - bwd) +
                                  half(bytes / std::max(1.0, layers + 1), 1));
      p.comm_s = p.accumulation * (gather_fwd + gather_bwd + rs);
    }
    p.exposed_comm_s = exposed;
  }
  p.step_s = p.compute_s + p.optimizer_s + p.offload_s + p.exposed_comm_s;
  p.tokens_per_s = static_cast<double>(per_round * p.accumulation * cfg.data.seq_len) / p.step_s;

  // Fit, and the smallest world size that fits.
  p.fits = p.memory.total <= rank_memory_bytes(d, s.world);
  for (int n = 1; n <= 65536; n *= 2) {
    PlanInput other = in;
    other.ranks = n;
    if (plan_memory(other).total <= rank_memory_bytes(d, n)) {
      p.smallest_ranks = n;
      break;
    }
  }
  p.note = d.kind == "cpu" ? str_cat("compute from a calibration run on this machine (", in.calibration.how,
                                     "); collectives at ", d.busbw_intra / 1e9, " GB/s bus bandwidth")
                           : str_cat("compute at ", d.mfu * 100, "% of ", d.peak_flops / 1e12,
                                     " TFLOP/s; collectives at ", d.busbw_intra / 1e9, " GB/s within a node of ",
                                     d.ranks_per_node, ", ", d.busbw_inter / 1e9, " GB/s across nodes");
  if (cfg.data.mode == "sft") p.note += "; every position scored (SFT data scores fewer: faster)";
  if (d.kind == "cpu" && std::min(s.world, d.ranks_per_node) * in.calibration.threads > d.cores) {
    p.note += "; more ranks than cores: they time-share the cores, which the step time does not model (expect it slower)";
  }
  return p;
}

nlohmann::json plan_to_json(const PlanInput& in, const Plan& p) {
  nlohmann::json j;
  j["device"] = in.device.kind;
  j["ranks"] = in.ranks;
  j["memory"] = {{"params", p.memory.params},           {"grads", p.memory.grads},
                 {"optimizer", p.memory.optimizer},     {"activations", p.memory.activations},
                 {"buffers", p.memory.buffers},         {"total", p.memory.total},
                 {"optimizer_on_host", p.memory.optimizer_on_host},
                 {"available", rank_memory_bytes(in.device, in.ranks)}};
  j["step_s"] = p.step_s;
  j["tokens_per_s"] = p.tokens_per_s;
  j["fits"] = p.fits;
  j["smallest_ranks"] = p.smallest_ranks == 0 ? nlohmann::json(nullptr) : nlohmann::json(p.smallest_ranks);
  j["time"] = {{"compute_s", p.compute_s},   {"optimizer_s", p.optimizer_s}, {"offload_s", p.offload_s},
               {"comm_s", p.comm_s},         {"exposed_comm_s", p.exposed_comm_s}};
  j["model"] = {{"trainable", p.trainable}, {"frozen", p.frozen}, {"flops_per_token", p.flops_per_token},
                {"layers", in.model.num_layers}, {"hidden", in.model.hidden_size}, {"vocab", in.model.vocab_size}};
  j["run"] = {{"zero_stage", in.config.parallel.zero_stage}, {"offload", in.config.optim.offload},
              {"checkpoint_every", p.checkpoint_every}, {"micro_batch", in.config.data.micro_batch},
              {"seq_len", in.config.data.seq_len}, {"global_batch", in.config.data.global_batch},
              {"accumulation", p.accumulation}, {"dtype", in.config.model.dtype}};
  j["assumes"] = p.note;
  if (in.device.kind == "cpu") {
    const CpuCalibration& k = in.calibration;
    j["calibration"] = {{"rest_fwd_s", k.rest_fwd_s}, {"rest_bwd_s", k.rest_bwd_s}, {"block_fwd_s", k.block_fwd_s},
                        {"block_bwd_s", k.block_bwd_s}, {"adam_s_per_elem", k.adam_s_per_elem},
                        {"threads", k.threads}, {"how", k.how}};
  }
  return j;
}

CpuCalibration calibrate_cpu(const PlanInput& in, int threads) {
  CpuCalibration k;
  k.threads = threads;
  const int saved_threads = at::get_num_threads();
  at::set_num_threads(threads);
  const torch::Dtype dtype = parse_dtype(in.config.model.dtype);
  // A stand-in smaller than the model when the real one would take long
  // (fewer rows, then narrower, then shorter sequences): its times are scaled
  // by the ratio of FLOPs (per block, and outside). Whatever the sizes, the
  // calibration stays within a few seconds.
  ModelConfig proxy = in.model;
  const int64_t seq = in.config.data.seq_len;
  int64_t mb = in.config.data.micro_batch, pseq = seq;
  auto work = [&](const ModelConfig& c, int64_t rows, int64_t s) {
    return static_cast<double>(rows * s) * training_flops_per_token(c, s) / static_cast<double>(c.num_layers);
  };
  proxy.num_layers = 1;
  while (work(proxy, mb, pseq) > 200e9) {
    if (mb > 1) {
      mb /= 2;
    } else if (proxy.hidden_size > 256 && proxy.hidden_size / 2 / proxy.num_heads >= 8) {
      proxy.hidden_size /= 2;
      proxy.intermediate_size /= 2;
      proxy.head_dim = proxy.hidden_size / proxy.num_heads;
    } else if (pseq > 256) {
      pseq /= 2;
    } else {
      break;
    }
  }
  const bool smaller = proxy.hidden_size < in.model.hidden_size || pseq < seq;
  if (proxy.vocab_size > 65536 && smaller) proxy.vocab_size = 65536;
  // One layer of its own shape: no per-layer tables, the plain rotary embedding.
  proxy.windowed_layers.clear();
  proxy.rope_layers.clear();
  proxy.rotary_dim = 0;
  proxy.rope = RopeSpec{};
  proxy.local_rope = false;

  struct Times {
    double fwd, bwd;
  };
  auto time_model = [&](int64_t layers) {
    ModelConfig c = proxy;
    c.num_layers = layers;
    auto model = make_causal_lm(c);
    model->init_weights(1);
    if (in.config.model.lora.rank > 0) {
      model->enable_lora(lora_targets(in.config.model.lora, c), in.config.model.lora.rank,
                         in.config.model.lora.alpha, in.config.model.lora.dropout);
    }
    model->to(dtype);
    model->train();
    torch::Tensor ids = torch::randint(0, c.vocab_size, {mb, pseq + 1}, torch::kInt64);
    torch::Tensor input = ids.slice(1, 0, pseq), labels = ids.slice(1, 1).reshape({-1});
    // With document masking, attention runs masked (a slower kernel than the
    // causal one): time it so, with one document per row.
    std::optional<Documents> docs;
    if (dataset_options(in.config.data).document_mask) {
      docs = Documents{torch::zeros({mb, pseq}, torch::kInt64), torch::arange(pseq).expand({mb, pseq}).contiguous()};
    }
    std::vector<double> fwds, bwds;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) {  // the first one warms up; the median of up to 4 more (3 s)
      const auto t0 = std::chrono::steady_clock::now();
      if (i > 2 && std::chrono::duration<double>(t0 - start).count() > 3.0) break;
      torch::Tensor hidden = model->hidden_states(input, nullptr, docs ? &*docs : nullptr);
      torch::Tensor loss = cross_entropy_sum(*model, hidden.reshape({-1, hidden.size(-1)}), labels, kIgnoreIndex);
      const auto t1 = std::chrono::steady_clock::now();
      loss.backward();
      const auto t2 = std::chrono::steady_clock::now();
      for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
      if (i == 0) continue;
      fwds.push_back(std::chrono::duration<double>(t1 - t0).count());
      bwds.push_back(std::chrono::duration<double>(t2 - t1).count());
    }
    // The median, as a run's step time is read.
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.size() % 2 == 1 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
    };
    return Times{median(fwds), median(bwds)};
  };
  // Blocks from the difference of a one-block model and one of up to 5
  // (the model's own depth when it is shallower): several blocks' worth of
  // signal above the timing noise.
  const int64_t deep = std::clamp<int64_t>(in.model.num_layers, 2, 5);
  // Ranks on one node run side by side and share its cores, caches and
  // memory bandwidth: with one thread per rank, time as many copies at once
  // as ranks will run on the node (up to 4 per core).
  const int copies = threads == 1 ? std::max(1, std::min(in.device.ranks_per_node, 4 * in.device.cores)) : 1;
  k.copies = copies;
  auto time_together = [&](int64_t layers) {
    std::vector<Times> got(static_cast<size_t>(copies));
    std::vector<std::thread> pool;
    for (int i = 1; i < copies; ++i) pool.emplace_back([&, i] { got[static_cast<size_t>(i)] = time_model(layers); });
    got[0] = time_model(layers);
    for (auto& t : pool) t.join();
    Times mean{0, 0};
    for (const Times& t : got) {
      mean.fwd += t.fwd / copies;
      mean.bwd += t.bwd / copies;
    }
    return mean;
  };
  const Times one = time_together(1), many = time_together(deep);
  const double blocks = static_cast<double>(deep - 1);
  const double block_fwd = std::max(0.0, many.fwd - one.fwd) / blocks;
  const double block_bwd = std::max(0.0, many.bwd - one.bwd) / blocks;
  // Scale to the real sizes by FLOPs.
  const double tok_ratio = static_cast<double>(in.config.data.micro_batch * seq) / static_cast<double>(mb * pseq);
  const double block_ratio =
      tok_ratio * (block_params(in.model) + 2.0 * static_cast<double>(seq) * static_cast<double>(in.model.hidden_size)) /
      (block_params(proxy) + 2.0 * static_cast<double>(pseq) * static_cast<double>(proxy.hidden_size));
  const double rest_ratio = tok_ratio * static_cast<double>(in.model.vocab_size * in.model.hidden_size) /
                            static_cast<double>(proxy.vocab_size * proxy.hidden_size);
  k.block_fwd_s = block_fwd * block_ratio;
  k.block_bwd_s = block_bwd * block_ratio;
  k.rest_fwd_s = std::max(0.0, one.fwd - block_fwd) * rest_ratio;
  k.rest_bwd_s = std::max(0.0, one.bwd - block_bwd) * rest_ratio;
  // AdamW over 4 Mi elements.
  {
    const int64_t n = int64_t{1} << 22;
    AdamWOptions o;
    FlatAdamW adam(torch::zeros({n}), {{0, n}}, o);
    torch::Tensor g = torch::randn({n});
    double best = 1e30;
    for (int i = 0; i < 4; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      adam.step(g, 1e-4, 1.0);
      if (i > 0) best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    k.adam_s_per_elem = best / static_cast<double>(n);
  }
  at::set_num_threads(saved_threads);
  k.how = str_cat("1 and ", deep, " blocks", smaller || mb != in.config.data.micro_batch
                                        ? str_cat(" of a stand-in of width ", proxy.hidden_size, ", micro-batch ", mb,
                                                  pseq < seq ? str_cat(", sequence ", pseq) : std::string(),
                                                  ", scaled by FLOPs")
                                        : std::string(),
                  ", ", threads, " thread(s)", copies > 1 ? str_cat(", ", copies, " copies at once") : std::string());
  return k;
}

ModelConfig planned_model_config(const Config& config, int64_t data_vocab) {
  const ModelSection& m = config.model;
  ModelConfig c;
  if (!m.config.empty()) {
    c = load_model_config(m.config);
  } else if (is_gguf_path(m.init)) {
    GgufFile file(m.init);
    c = gguf_model_config(file);
  } else if (!m.init.empty()) {
    c = load_model_config(m.init);
  } else {
    if (m.vocab_size == 0 && data_vocab <= 0) {
      throw InputError("model.vocab_size is 0 (the data's) and no training shard gives it: set model.vocab_size");
    }
    c = random_model_config(m, data_vocab, -1, -1);
  }
  check_seq_len(config, c);
  return c;
}

}  // namespace shardtune
