// shardtune: the command-line entry point.
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shardtune/cli/rank_main.h"
#include "shardtune/comm/communicator.h"
#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"
#include "shardtune/data/data_check.h"
#include "shardtune/data/prep.h"
#include "shardtune/judge/judge.h"
#include "shardtune/data/token_shard.h"
#include "shardtune/model/generate.h"
#include "shardtune/model/gguf_model.h"
#include "shardtune/tokenize/chat.h"
#include "shardtune/tokenize/tokenizer.h"
#include "shardtune/model/hf_checkpoint.h"
#include "shardtune/train/plan.h"
#include "shardtune/train/trainer.h"
#include "shardtune/version.h"

namespace shardtune {
namespace {

const char* kUsage = R"(usage: shardtune <command> [args]

commands:
  info [CONFIG] [key=value ...] [--print-config]
      start every rank, check the communicator with an all_reduce and print a
      table of the ranks (rank, local rank, threads, host)
  config CONFIG [key=value ...]
      validate CONFIG with the overrides applied and print the resolved config
  generate --model DIR|FILE.gguf (--prompt TEXT | --prompt-file FILE | --prompt-ids ID,ID,...)
           [options]
      continue a prompt with a Hugging Face model folder (gpt2, llama,
      mistral, qwen2, qwen3, gemma2, gemma3_text, phi3, olmo2, smollm3) or a
      GGUF file (llama, qwen2, qwen3, gemma2, gemma3, phi3, olmo2, smollm3) and print the
      text (the new token ids with --prompt-ids; with --prompt-file, one
      prompt per line in, one JSON line {"prompt", "completion"} out).
      Options: --tokenizer SPEC [the model's tokenizer], --chat (the prompt
      is a user message; --chat-template chatml|qwen3|llama3|gemma|phi3|
      phi4|plain [the tokenizer's own template, else chatml], --system TEXT),
      --max-new-tokens N [64], --temperature T [0 = greedy], --top-k K
      [0 = off], --top-p P [1], --seed S, --device cpu|cuda[:i] [cpu],
      --dtype float32|bfloat16 [float32], --no-cache
  prep --tokenizer SPEC --input FILE [--input FILE ...] --output PREFIX [options]
      tokenize examples (JSONL: chat, prompt_completion, text; or .txt) into
      HDF5 shards PREFIX-train-NNNNN.h5 and PREFIX-val-NNNNN.h5. --tokenizer
      is required: the model's folder or .gguf file (the tokenizer the model
      was trained with; train refuses shards made by another), or byte for
      a byte-level random-init model. Options:
      --format chat|prompt_completion|text|auto [auto], --val-fraction F [0],
      --shard-tokens N [100000000], --threads N [cores], --chat-template
      NAME [the tokenizer's own, else chatml; names as generate's], --train-on
      assistant|all [assistant],
      --skip-bad (skip and count bad lines), --overwrite
  data check FILE.jsonl [--model DIR|FILE.gguf] [--tokenizer SPEC] [--config CONFIG]
             [--chat-template NAME] [--train-on assistant|all] [--seq-len N] [--output DIR]
      check chat JSONL before a fine-tune: format problems by kind with their
      line numbers (errors: what prep refuses; warnings), then with the
      model's (or --tokenizer's) tokenizer and chat template the tokens and
      trained tokens per example (min, mean, p50, p90, p99, max), examples
      longer than a window (seq_len: --seq-len, else CONFIG's data.seq_len)
      and than the model's context, and with CONFIG the windows, tokens and
      steps per epoch. Writes data_check.txt, .json and a histogram .png to
      DIR [FILE without .jsonl + ".check"]. Exit 0 (warnings too), 2 on errors
  inspect FILE.h5 [--tokenizer SPEC] [--show N]
      validate a token shard and print its attributes, counts, dtype and mask
      fraction; with --tokenizer, the first N [64] tokens decoded
  train CONFIG [key=value ...] [--print-config]
      train as CONFIG says (model, data, optim, parallel, train, eval,
      checkpoint sections; `shardtune config CONFIG` prints them all),
      resuming from the newest complete checkpoint unless
      checkpoint.resume=never. SIGTERM or SIGUSR1 saves and exits 0
  eval CONFIG --checkpoint DIR [key=value ...]
      validation loss and perplexity of a checkpoint on CONFIG's data.val
  eval --generate HELDOUT.jsonl --model M [--model M ...] [options]
      answer each held-out chat example with every arm and score the answer
      against the example's last turn, the assistant's (or, for an example
      ending with the user's turn, against the first arm's answer):
      exact, normalized, json_valid, json_equal, json_fields, token_f1,
      rouge_l, chrf (and regex with --regex R); per arm the mean with a 95%
      bootstrap interval, the difference from the first arm, prompt and
      answer tokens and latency. Arms: each --model (HF folder or .gguf)
      zero-shot, and with --few-shot K --few-shot-from FILE the first model
      with K conversations from FILE first [--shot-seed S]. --general FILE:
      general prompts answered by every arm too and scored apart
      (--general-metric NAME [chrf]), what a fine-tune kept beside what it
      gained. Options: --metric NAME [normalized], --limit N (of each file),
      --batch-size B (prompts generated together, left-padded, with a KV
      cache) [8], --output DIR [HELDOUT without .jsonl + ".eval"],
      --require-better (exit 1 unless the last arm beats the first in the
      task, its interval above 0), --tokenizer, --chat-template, and
      generate's sampling, --device and --dtype flags
  export --checkpoint DIR --output DIR|FILE.gguf [--adapter] [--dtype float32|bfloat16]
         [--gguf-type f32|f16|bf16|q8_0] [--overwrite]
      write a checkpoint as a Hugging Face folder (LoRA merged, with the
      tokenizer), with --adapter its LoRA adapter alone in PEFT's layout, or,
      for an output ending in .gguf, a GGUF file (LoRA merged) [f32]
  convert SRC DST [--gguf-type f32|f16|bf16|q8_0] [--overwrite]
      GGUF file <-> Hugging Face folder, the direction by the names: a .gguf
      SRC becomes the folder DST (config.json, float32 model.safetensors,
      tokenizer.json, tokenizer_config.json, generation_config.json); a folder
      SRC becomes the .gguf DST (the families above but gpt2; 2-D weights as
      --gguf-type [f32], with the tokenizer)
  plan CONFIG [key=value ...] [--ranks N] [--device KIND] [--json] [options]
      predict, without training, each rank's memory (params, grads,
      optimizer, activations, buffers, total) and the step time and tokens/s
      of CONFIG on N [1] ranks of KIND: cpu (this machine; a short
      calibration run times the model here), h100, h200, a100-80gb,
      a100-40gb, l40s [cpu]; say whether it fits and the smallest rank count
      that does. Options: --ranks-per-node N [cpu: N; GPUs: 8], --mfu F (GPU
      compute at F x peak) [0.4], --busbw GB/s (within a node), --inter-busbw
      GB/s (across nodes), --memory-gib G (per GPU, or per CPU node)
  version
      print the version and the build's features

Under mpirun or srun every rank runs the command. Overrides set any config
key, e.g. comm.timeout_s=30 log.level=debug.
)";

// CONFIG (optional), key=value overrides and flags of a config-taking command.
struct ConfigArgs {
  std::string path;
  std::vector<std::string> overrides;
  bool print_config = false;
};

ConfigArgs parse_config_args(const std::vector<std::string>& args, bool require_path) {
  ConfigArgs out;
  for (const auto& a : args) {
    if (a == "--print-config") {
      out.print_config = true;
    } else if (is_override(a)) {
      out.overrides.push_back(a);
    } else if (!a.empty() && a[0] == '-') {
      throw InputError(str_cat("unknown option '", a, "'\n", kUsage));
    } else if (out.path.empty()) {
      out.path = a;
    } else {
      throw InputError(str_cat("unexpected argument '", a, "' (a config path is already given: '",
                               out.path, "')"));
    }
  }
  if (require_path && out.path.empty()) throw InputError(str_cat("missing CONFIG\n", kUsage));
  return out;
}

Config resolve_config(const ConfigArgs& args) {
  return args.path.empty() ? default_config(args.overrides)
                           : load_config(args.path, args.overrides);
}

int cmd_config(const DistContext& dist, const std::vector<std::string>& args) {
  const Config config = resolve_config(parse_config_args(args, /*require_path=*/true));
  if (dist.rank() == 0) std::cout << to_yaml(config) << std::flush;
  return kExitOk;
}

int cmd_info(const DistContext& dist, const std::vector<std::string>& args) {
  const ConfigArgs parsed = parse_config_args(args, /*require_path=*/false);
  const Config config = resolve_config(parsed);
  if (parsed.print_config && dist.rank() == 0) std::cout << to_yaml(config) << std::flush;
  const int threads = setup_rank(dist, config);
  auto comm = make_communicator(config.comm, dist.info());

  // Every rank contributes its placement; rank 0 prints the table.
  const DistInfo& info = dist.info();
  // rank, local rank, local world, threads, then the host name in 64 bytes.
  constexpr int kHostWords = 8;
  constexpr int kFields = 4 + kHostWords;
  std::vector<int64_t> fields{info.rank, info.local_rank, info.local_world_size, threads};
  fields.resize(kFields, 0);
  std::memcpy(fields.data() + 4, info.hostname.data(), std::min<size_t>(info.hostname.size(), 8 * kHostWords - 1));
  torch::Tensor mine = torch::tensor(fields);
  torch::Tensor all = torch::empty({dist.world_size() * kFields}, torch::kInt64);
  comm->all_gather(mine, all)->wait();

  torch::Tensor ones = torch::ones({1}, torch::kInt64);
  comm->all_reduce(ones, ReduceOp::kSum)->wait();
  if (ones.item<int64_t>() != dist.world_size()) {
    throw CommError(str_cat("all_reduce check failed: got ", ones.item<int64_t>(), ", expected ",
                            dist.world_size()));
  }
  comm->barrier()->wait();
  if (dist.rank() == 0) {
    std::printf("shardtune %s: %d rank(s), backend %s, all_reduce check passed\n",
                kShardtuneVersion, dist.world_size(), comm->backend().c_str());
    std::printf("%6s %11s %11s %8s  %s\n", "rank", "local_rank", "local_world", "threads", "host");
    const int64_t* v = all.data_ptr<int64_t>();
    for (int r = 0; r < dist.world_size(); ++r) {
      char host[8 * kHostWords] = {};
      std::memcpy(host, v + r * kFields + 4, sizeof host - 1);
      std::printf("%6ld %11ld %11ld %8ld  %s\n", static_cast<long>(v[r * kFields]),
                  static_cast<long>(v[r * kFields + 1]), static_cast<long>(v[r * kFields + 2]),
                  static_cast<long>(v[r * kFields + 3]), host);
    }
    std::fflush(stdout);
  }
  return kExitOk;
}

// Flag parsing: --name value pairs and switches.
class Flags {
 public:
  Flags(const std::vector<std::string>& args, const std::vector<std::string>& switches,
        const char* command)
      : command_(command) {
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a.rfind("--", 0) != 0) {
        positional_.push_back(a);
      } else if (std::find(switches.begin(), switches.end(), a) != switches.end()) {
        values_.emplace_back(a, "");
      } else if (i + 1 < args.size()) {
        values_.emplace_back(a, args[++i]);
      } else {
        throw InputError(str_cat(command, ": ", a, " needs a value"));
      }
    }
  }
  std::vector<std::string> all(const std::string& name) {
    std::vector<std::string> out;
    for (auto it = values_.begin(); it != values_.end();) {
      if (it->first == name) {
        out.push_back(it->second);
        it = values_.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }
  std::string get(const std::string& name, const std::string& fallback) {
    auto v = all(name);
    return v.empty() ? fallback : v.back();
  }
  bool has(const std::string& name) { return !all(name).empty(); }
  // Whether the flag was given, without taking its value.
  bool given(const std::string& name) const {
    return std::any_of(values_.begin(), values_.end(), [&](const auto& v) { return v.first == name; });
  }
  double number(const std::string& name, double fallback) {
    const std::string v = get(name, "");
    if (v.empty()) return fallback;
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !std::isfinite(d)) {
      throw InputError(str_cat(command_, ": ", name, ": expected a finite number, got \"", capped(v), "\""));
    }
    return d;
  }
  // A whole number in [lo, hi].
  int64_t integer(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) {
    const std::string v = get(name, "");
    if (v.empty()) return fallback;
    char* end = nullptr;
    errno = 0;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    if (*end != '\0' || errno != 0 || n < lo || n > hi) {
      throw InputError(str_cat(command_, ": ", name, ": expected a whole number from ", lo, " to ", hi, ", got \"",
                               capped(v), "\""));
    }
    return n;
  }
  const std::vector<std::string>& positional() const { return positional_; }
  // Throws for any flag or argument nobody asked for.
  void done(bool positional_ok = true) const {
    if (!values_.empty()) {
      throw InputError(str_cat(command_, ": unknown option '", values_[0].first, "'\n", kUsage));
    }
    if (!positional_ok && !positional_.empty()) {
      throw InputError(str_cat(command_, ": unexpected argument '", positional_[0], "'\n", kUsage));
    }
  }

 private:
  const char* command_;
  std::vector<std::pair<std::string, std::string>> values_;
  std::vector<std::string> positional_;
};

// The ids that end generation: generation_config.json's eos_token_id (an id
// or a list) when the model folder has one, as transformers does; else the
// config's.
std::vector<int64_t> generation_eos_ids(const std::string& model_dir, const ModelConfig& config) {
  const std::string path = model_dir + "/generation_config.json";
  std::ifstream in(path);
  if (!in) return config.eos_token_ids;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(str_cat(path, ": not valid JSON: ", without_exception_tag(e.what())));
  }
  if (!j.is_object() || !j.contains("eos_token_id") || j["eos_token_id"].is_null()) return config.eos_token_ids;
  return token_ids_from_json(j, "eos_token_id", path);
}

// generate's sampling flags (eval --generate takes them too); at least
// min_new_tokens new tokens.
// A report folder (files added to it, nothing replaced wholesale) must be a
// folder, and neither an input nor inside one (a model folder would gain a
// report among its weights).
void refuse_report_folder(const std::string& dir, const std::vector<std::string>& inputs, const std::string& what) {
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec)) {
    throw InputError(str_cat(what, ": --output ", dir, " is a file; the report goes to a folder"));
  }
  namespace fs = std::filesystem;
  const fs::path out = fs::weakly_canonical(fs::absolute(dir), ec);
  for (const auto& input : inputs) {
    const fs::path in = fs::weakly_canonical(fs::absolute(input), ec);
    if (ec || !fs::is_directory(in)) continue;
    if (path_within(out, in)) {
      throw InputError(str_cat(what, ": --output ", dir, " is ", out == in ? "" : "inside ", "the input ", input,
                               "; write the report elsewhere"));
    }
  }
}

SamplingOptions sampling_flags(Flags& f, const char* command, int64_t min_new_tokens) {
  SamplingOptions o;
  // Greedy decoding draws nothing: these would be dropped (looked up before
  // reading, which takes the values).
  std::vector<std::string> draw_flags;
  for (const char* flag : {"--top-k", "--top-p", "--seed"}) {
    if (f.given(flag)) draw_flags.emplace_back(flag);
  }
  o.max_new_tokens = f.integer("--max-new-tokens", 64, min_new_tokens, int64_t{1} << 24);
  o.temperature = f.number("--temperature", 0.0);
  o.top_k = f.integer("--top-k", 0, 0, int64_t{1} << 30);
  o.top_p = f.number("--top-p", 1.0);
  o.seed = static_cast<uint64_t>(f.integer("--seed", 0, 0, INT64_MAX));
  if (o.temperature < 0) throw InputError(str_cat(command, ": --temperature must be 0 (greedy) or positive"));
  if (!(o.top_p > 0 && o.top_p <= 1)) throw InputError(str_cat(command, ": --top-p must be in (0, 1]"));
  if (o.temperature == 0 && !draw_flags.empty()) {
    throw InputError(str_cat(command, ": ", draw_flags[0], " has no effect with greedy decoding (--temperature 0, the "
                             "default); give --temperature > 0 to sample, or leave it out"));
  }
  return o;
}

// Generation that stopped because the context was full, not at EOS or
// --max-new-tokens, says so (on stderr: stdout is the answer).
void note_context_stop(const std::vector<int64_t>& ids, size_t prompt, const CausalLM& model, const SamplingOptions& o) {
  const int64_t made = static_cast<int64_t>(ids.size() - prompt);
  if (made >= o.max_new_tokens || static_cast<int64_t>(ids.size()) < model.config().max_positions) return;
  if (!ids.empty() && std::find(o.eos_token_ids.begin(), o.eos_token_ids.end(), ids.back()) != o.eos_token_ids.end()) {
    return;
  }
  std::fprintf(stderr, "generate: stopped at the model's context of %ld positions after %ld of --max-new-tokens %ld\n",
               static_cast<long>(model.config().max_positions), static_cast<long>(made),
               static_cast<long>(o.max_new_tokens));
}

int cmd_generate(const DistContext& dist, const std::vector<std::string>& args) {
  if (dist.rank() != 0) return kExitOk;  // one process generates
  Flags f(args, {"--no-cache", "--chat"}, "generate");
  const std::string model_dir = f.get("--model", "");
  const std::string ids_text = f.get("--prompt-ids", "");
  const std::string prompt = f.get("--prompt", "");
  const std::string prompt_file = f.get("--prompt-file", "");
  std::string tokenizer_spec = f.get("--tokenizer", "");
  const bool chat = f.has("--chat");
  const std::string chat_template = f.get("--chat-template", "");
  const std::string system = f.get("--system", "");
  const std::string device = f.get("--device", "cpu");
  const std::string dtype = f.get("--dtype", "float32");
  SamplingOptions o = sampling_flags(f, "generate", 0);
  o.use_cache = !f.has("--no-cache");
  f.done(/*positional_ok=*/false);
  if (model_dir.empty() || (!ids_text.empty()) + (!prompt.empty()) + (!prompt_file.empty()) != 1) {
    throw InputError(str_cat("generate needs --model and one of --prompt, --prompt-file, --prompt-ids\n", kUsage));
  }
  // Flags that would be dropped in this mode are refused by name.
  if (!chat && (!system.empty() || !chat_template.empty())) {
    throw InputError(str_cat("generate: ", !system.empty() ? "--system" : "--chat-template",
                             " applies to --chat prompts only; add --chat or leave it out"));
  }
  if (!ids_text.empty() && (chat || !tokenizer_spec.empty())) {
    throw InputError(str_cat("generate: --prompt-ids are token ids already: ", chat ? "--chat" : "--tokenizer",
                             " has no effect with them"));
  }
  std::vector<std::string> prompts{prompt};
  if (!prompt_file.empty()) {
    std::ifstream in(prompt_file);
    if (!in) throw InputError(str_cat(prompt_file, ": cannot open"));
    prompts.clear();
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) prompts.push_back(line);
    }
    if (prompts.empty()) throw InputError(str_cat(prompt_file, ": no prompts (one per line)"));
  }
  if (dtype != "float32" && dtype != "bfloat16") {
    throw InputError(str_cat("--dtype: expected float32 or bfloat16, got \"", capped(dtype), "\""));
  }
  if (!(device == "cpu" || device == "cuda" || (device.rfind("cuda:", 0) == 0 && device.size() > 5 &&
                                                device.find_first_not_of("0123456789", 5) == std::string::npos))) {
    throw InputError(str_cat("generate: --device: expected cpu, cuda or cuda:N, got \"", capped(device), "\""));
  }
  auto model = load_hf_model(model_dir, dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat32,
                             torch::Device(device));
  o.eos_token_ids = generation_eos_ids(model_dir, model->config());

  if (!ids_text.empty()) {
    std::vector<int64_t> ids_in;
    for (const auto& piece : split(ids_text, ',')) {
      char* end = nullptr;
      const long long id = std::strtoll(std::string(trim(piece)).c_str(), &end, 10);
      if (trim(piece).empty() || *end != '\0') {
        throw InputError(str_cat("--prompt-ids: '", piece, "' is not a token id"));
      }
      ids_in.push_back(id);
    }
    const auto ids = generate(*model, ids_in, o);
    note_context_stop(ids, ids_in.size(), *model, o);
    for (size_t i = ids_in.size(); i < ids.size(); ++i) {
      std::printf("%s%ld", i > ids_in.size() ? "," : "", static_cast<long>(ids[i]));
    }
    std::printf("\n");
    return kExitOk;
  }

  const bool own_tokenizer = tokenizer_spec.empty();
  if (own_tokenizer) tokenizer_spec = model_dir;  // its tokenizer.json, vocab.json or tokenizer.model
  auto tok = load_tokenizer(tokenizer_spec);
  if (!own_tokenizer) check_given_tokenizer(*tok, tokenizer_spec, model_dir);
  if (tok->vocab_size() > model->config().vocab_size) {
    throw InputError(str_cat("tokenizer ", tokenizer_spec, " has ", tok->vocab_size(), " tokens but the model only ",
                             model->config().vocab_size));
  }
  const ChatFormat format = chat ? resolve_chat_format(*tok, chat_template) : ChatFormat{};
  if (chat) o.eos_token_ids.push_back(end_of_turn_id(*tok, format.kind));
  for (const auto& text : prompts) {
    std::vector<int32_t> prompt_ids;
    if (chat) {
      std::vector<ChatMessage> msgs;
      if (!system.empty()) msgs.push_back({"system", system});
      msgs.push_back({"user", text});
      prompt_ids = render_generation_prompt(*tok, format.kind, template_messages(format, msgs));
    } else {
      if (tok->bos_id() >= 0) prompt_ids.push_back(tok->bos_id());
      const auto body = tok->encode(text);
      prompt_ids.insert(prompt_ids.end(), body.begin(), body.end());
    }
    const auto ids = generate(*model, std::vector<int64_t>(prompt_ids.begin(), prompt_ids.end()), o);
    note_context_stop(ids, prompt_ids.size(), *model, o);
    std::vector<int32_t> generated(ids.begin() + static_cast<long>(prompt_ids.size()), ids.end());
    const std::string answer = tok->decode(generated, /*skip_special=*/true);
    if (prompt_file.empty()) {
      std::printf("%s\n", answer.c_str());
    } else {  // one JSON line per prompt
      std::printf("%s\n", nlohmann::json({{"prompt", text}, {"completion", answer}})
                               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                               .c_str());
    }
    std::fflush(stdout);
  }
  return kExitOk;
}

int cmd_prep(const DistContext& dist, const std::vector<std::string>& args) {
  if (dist.rank() != 0) return kExitOk;  // one process writes the shards
  Flags f(args, {"--skip-bad", "--overwrite"}, "prep");
  PrepOptions o;
  // No default: bytes by accident would train a real model on ids it never saw.
  o.tokenizer = f.get("--tokenizer", "");
  if (o.tokenizer.empty()) {
    throw InputError("prep: --tokenizer is required: the model folder or .gguf file you will fine-tune (its "
                     "tokenizer), a tokenizer spec, or byte for the byte tokenizer of a random-init model");
  }
  o.inputs = f.all("--input");
  o.output = f.get("--output", "");
  o.format = f.get("--format", "auto");
  o.val_fraction = f.number("--val-fraction", 0.0);
  o.shard_tokens = f.integer("--shard-tokens", 100000000, 1, int64_t{1} << 40);
  o.threads = static_cast<int>(f.integer("--threads", 0, 0, 1024));
  o.chat_template = f.get("--chat-template", "");
  const std::string train_on = f.get("--train-on", "assistant");
  if (train_on != "assistant" && train_on != "all") {
    throw InputError(str_cat("prep: --train-on must be assistant or all, got \"", train_on, "\""));
  }
  o.train_on_all = train_on == "all";
  o.skip_bad = f.has("--skip-bad");
  o.overwrite = f.has("--overwrite");
  o.progress = isatty(fileno(stderr));
  for (const auto& p : f.positional()) o.inputs.push_back(p);
  f.done();
  const PrepSummary s = run_prep(o);
  std::printf("%s", format_summary(s).c_str());
  return kExitOk;
}

int cmd_data(const DistContext& dist, const std::vector<std::string>& args) {
  if (args.empty() || args[0] != "check") throw InputError(str_cat("data: expected 'data check FILE.jsonl'\n", kUsage));
  if (dist.rank() != 0) return kExitOk;
  Flags f(std::vector<std::string>(args.begin() + 1, args.end()), {}, "data check");
  DataCheckOptions o;
  std::string model = f.get("--model", "");
  std::string tokenizer = f.get("--tokenizer", "");
  const std::string config_path = f.get("--config", "");
  o.chat_template = f.get("--chat-template", "");
  const std::string train_on = f.get("--train-on", "assistant");
  if (train_on != "assistant" && train_on != "all") {
    throw InputError(str_cat("data check: --train-on must be assistant or all, got \"", train_on, "\""));
  }
  o.train_on_all = train_on == "all";
  o.seq_len = f.integer("--seq-len", 0, 1, int64_t{1} << 30);
  std::string out_dir = f.get("--output", "");
  f.done();
  if (f.positional().size() != 1) throw InputError(str_cat("data check needs one FILE.jsonl\n", kUsage));
  o.input = f.positional()[0];
  if (!out_dir.empty()) refuse_report_folder(out_dir, {o.input}, "data check");
  if (!config_path.empty()) {
    const Config config = load_config(config_path);
    if (o.seq_len == 0) o.seq_len = config.data.seq_len;
    o.global_batch = config.data.global_batch;
    if (model.empty()) model = !config.model.init.empty() ? config.model.init : config.model.config;
  }
  const bool given = !tokenizer.empty();
  if (!model.empty()) {
    o.model_context = (is_gguf_path(model) ? gguf_model_config(GgufFile(model)) : load_model_config(model)).max_positions;
    if (tokenizer.empty()) tokenizer = model;
  }
  std::unique_ptr<Tokenizer> tok;
  if (!tokenizer.empty()) tok = load_tokenizer(tokenizer);
  if (given && !model.empty()) check_given_tokenizer(*tok, tokenizer, model);
  o.tokenizer = tok.get();
  const DataCheckResult r = check_chat_data(o);
  std::printf("%s", format_data_check(r, o).c_str());
  if (out_dir.empty()) {
    const bool jsonl = o.input.size() > 6 && o.input.compare(o.input.size() - 6, 6, ".jsonl") == 0;
    const std::string stem = jsonl ? o.input.substr(0, o.input.size() - 6) : o.input;
    out_dir = stem + ".check";
  }
  std::string why;
  const std::string png = write_data_check(r, o, out_dir, why);
  std::printf("report: %s/data_check.txt, data_check.json, %s\n", out_dir.c_str(),
              png.empty() ? str_cat("no histogram (", why, ")").c_str() : png.c_str());
  return r.ok() ? kExitOk : kExitBadInput;
}

int cmd_inspect(const DistContext& dist, const std::vector<std::string>& args) {
  if (dist.rank() != 0) return kExitOk;
  Flags f(args, {}, "inspect");
  const std::string spec = f.get("--tokenizer", "");
  const int64_t show = f.integer("--show", 64, 0, int64_t{1} << 40);
  f.done();
  if (f.positional().size() != 1) throw InputError(str_cat("inspect needs one FILE.h5\n", kUsage));
  TokenShardReader r(f.positional()[0]);
  const int64_t targets = r.validate_all();
  const auto& a = r.attrs();
  std::printf("%s\n  format shardtune.tokens v1, tokenizer %s (%s)%s\n  vocab_size %ld, bos %ld, eos %ld, pad %ld\n",
              r.path().c_str(), a.tokenizer_name.empty() ? "?" : a.tokenizer_name.c_str(), a.tokenizer.c_str(),
              a.chat_format.empty() ? "" : str_cat(", chat format ", a.chat_format).c_str(), static_cast<long>(a.vocab_size), static_cast<long>(a.bos_id),
              static_cast<long>(a.eos_id), static_cast<long>(a.pad_id));
  std::printf("  %ld documents, %ld tokens (uint%d), loss mask %s, %.1f%% targets\n", static_cast<long>(r.num_docs()),
              static_cast<long>(r.num_tokens()), r.token_bits(), r.has_mask() ? "present" : "absent (all 1)",
              r.num_tokens() ? 100.0 * static_cast<double>(targets) / static_cast<double>(r.num_tokens()) : 0.0);
  if (!spec.empty() && r.num_tokens() > 0) {
    auto tok = load_tokenizer(spec);
    if (tok->fingerprint() != a.tokenizer) {
      std::printf("  note: --tokenizer is %s (%s), the shard was made by %s (%s)\n", tok->name().c_str(),
                  tok->fingerprint().c_str(), a.tokenizer_name.c_str(), a.tokenizer.c_str());
    }
    const int64_t n = std::min(show, r.num_tokens());
    std::vector<int32_t> ids(static_cast<size_t>(n));
    r.read_tokens(0, n, ids.data());
    std::printf("  first %ld tokens decoded:\n%s\n", static_cast<long>(n), tok->decode(ids).c_str());
  }
  return kExitOk;
}

int cmd_train(DistContext& dist, const std::vector<std::string>& args) {
  const ConfigArgs parsed = parse_config_args(args, /*require_path=*/true);
  const Config config = resolve_config(parsed);
  if (parsed.print_config && dist.rank() == 0) std::cout << to_yaml(config) << std::flush;
  setup_rank(dist, config);
  const TrainSummary s = train(config, dist);
  if (dist.rank() == 0) {
    std::printf("train: steps %lld -> %lld in %.1f s%s\n", static_cast<long long>(s.first_step),
                static_cast<long long>(s.last_step), s.seconds, s.preempted ? " (stopped by a signal, saved)" : "");
    if (!std::isnan(s.val_loss_first) && s.val_step_last > s.first_step) {
      std::printf("validation loss: %.4f at step %lld -> %.4f at step %lld\n", s.val_loss_first,
                  static_cast<long long>(s.first_step), s.val_loss_last, static_cast<long long>(s.val_step_last));
    } else if (!std::isnan(s.val_loss_last)) {
      std::printf("validation loss: %.4f at step %lld\n", s.val_loss_last, static_cast<long long>(s.val_step_last));
    }
    if (!s.checkpoint.empty()) std::printf("checkpoint: %s\n", s.checkpoint.c_str());
    std::printf("metrics: %s\n", s.metrics_file.c_str());
    std::fflush(stdout);
  }
  return kExitOk;
}

int cmd_eval_generate(DistContext& dist, const std::vector<std::string>& args) {
  Flags f(args, {"--require-better"}, "eval --generate");
  JudgeOptions o;
  o.heldout = f.get("--generate", "");
  o.general = f.get("--general", "");
  const bool general_metric_given = f.given("--general-metric");
  o.general_metric = f.get("--general-metric", o.general_metric);
  o.models = f.all("--model");
  o.tokenizer = f.get("--tokenizer", "");
  o.chat_template = f.get("--chat-template", "");
  o.few_shot = f.integer("--few-shot", 0, 1, int64_t{1} << 20);
  o.few_shot_from = f.get("--few-shot-from", "");
  o.shot_seed = static_cast<uint64_t>(f.integer("--shot-seed", 0, 0, INT64_MAX));
  o.metric = f.get("--metric", "normalized");
  o.regex = f.get("--regex", "");
  o.limit = f.integer("--limit", 0, 1, int64_t{1} << 40);
  o.batch_size = f.integer("--batch-size", 8, 1, 4096);
  o.require_better = f.has("--require-better");
  o.device = f.get("--device", "cpu");
  o.dtype = f.get("--dtype", "float32");
  o.sampling = sampling_flags(f, "eval --generate", 1);
  o.output_dir = f.get("--output", "");
  f.done(/*positional_ok=*/false);
  if (o.dtype != "float32" && o.dtype != "bfloat16") {
    throw InputError(str_cat("--dtype: expected float32 or bfloat16, got \"", capped(o.dtype), "\""));
  }
  if (o.general.empty() && general_metric_given) {
    throw InputError("eval --generate: --general-metric has no effect without --general FILE");
  }
  if (o.output_dir.empty()) {
    const bool jsonl = o.heldout.size() > 6 && o.heldout.compare(o.heldout.size() - 6, 6, ".jsonl") == 0;
    o.output_dir = (jsonl ? o.heldout.substr(0, o.heldout.size() - 6) : o.heldout) + ".eval";
  }
  std::vector<std::string> inputs = o.models;
  inputs.push_back(o.heldout);
  if (!o.general.empty()) inputs.push_back(o.general);
  if (!o.few_shot_from.empty()) inputs.push_back(o.few_shot_from);
  refuse_report_folder(o.output_dir, inputs, "eval --generate");
  return run_judge(o, dist);
}

int cmd_eval(DistContext& dist, const std::vector<std::string>& args) {
  if (std::find(args.begin(), args.end(), "--generate") != args.end()) return cmd_eval_generate(dist, args);
  std::vector<std::string> rest;
  std::string checkpoint;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--checkpoint") {
      if (i + 1 == args.size()) throw InputError("eval: --checkpoint needs a value");
      checkpoint = args[++i];
    } else {
      rest.push_back(args[i]);
    }
  }
  if (checkpoint.empty()) throw InputError(str_cat("eval needs --checkpoint DIR\n", kUsage));
  const Config config = resolve_config(parse_config_args(rest, /*require_path=*/true));
  setup_rank(dist, config);
  const EvalResult r = evaluate_checkpoint(config, dist, checkpoint);
  if (dist.rank() == 0) {
    std::printf("%s: val_loss %.4f val_ppl %.3f (%lld target tokens, %lld samples)\n", checkpoint.c_str(), r.loss,
                r.perplexity, static_cast<long long>(r.tokens), static_cast<long long>(r.samples));
  }
  return kExitOk;
}

int cmd_export(const DistContext& dist, const std::vector<std::string>& args) {
  if (dist.rank() != 0) return kExitOk;
  Flags f(args, {"--adapter", "--overwrite"}, "export");
  const std::string checkpoint = f.get("--checkpoint", "");
  const std::string output = f.get("--output", "");
  const std::string dtype = f.get("--dtype", "");
  const std::string gguf_type = f.get("--gguf-type", "\x01");
  if (gguf_type.empty()) throw InputError("export: --gguf-type is empty (f32, f16, bf16 or q8_0)");
  const bool adapter = f.has("--adapter");
  const bool overwrite = f.has("--overwrite");
  f.done(/*positional_ok=*/false);
  if (checkpoint.empty() || output.empty()) throw InputError(str_cat("export needs --checkpoint and --output\n", kUsage));
  if (!dtype.empty() && dtype != "float32" && dtype != "bfloat16") {
    throw InputError(str_cat("--dtype: expected float32 or bfloat16, got \"", dtype, "\""));
  }
  const std::string type = gguf_type == "\x01" ? "" : gguf_type;
  if (!type.empty()) parse_gguf_type(type);  // a bad name fails before any work
  if (!checkpoint.empty() && !output.empty()) refuse_output_over_input(output, checkpoint, "export");
  export_checkpoint(checkpoint, output, adapter, dtype, overwrite, type);
  std::printf("exported %s%s to %s\n", checkpoint.c_str(), adapter ? " (LoRA adapter)" : "", output.c_str());
  return kExitOk;
}

int cmd_convert(const DistContext& dist, const std::vector<std::string>& args) {
  if (dist.rank() != 0) return kExitOk;
  Flags f(args, {"--overwrite"}, "convert");
  const std::string given = f.get("--gguf-type", "\x01");
  if (given.empty()) throw InputError("convert: --gguf-type is empty (f32, f16, bf16 or q8_0)");
  const std::string type = given == "\x01" ? "" : given;
  const bool overwrite = f.has("--overwrite");
  f.done();
  if (f.positional().size() != 2) throw InputError(str_cat("convert needs SRC and DST\n", kUsage));
  const std::string src = f.positional()[0], dst = f.positional()[1];
  if (is_gguf_path(src) == is_gguf_path(dst)) {
    throw InputError(str_cat("convert: exactly one of SRC and DST must end in .gguf (got '", src, "' and '", dst, "')"));
  }
  refuse_output_over_input(dst, src, "convert");
  if (is_gguf_path(src)) {
    if (!type.empty()) throw InputError("convert: --gguf-type is for writing a .gguf file");
    convert_gguf_to_hf(src, dst, overwrite);
  } else {
    GgufExportOptions o;
    o.type = parse_gguf_type(type.empty() ? "f32" : type);
    o.overwrite = overwrite;
    convert_hf_to_gguf(src, dst, o);
  }
  std::printf("converted %s to %s\n", src.c_str(), dst.c_str());
  return kExitOk;
}

int cmd_plan(const DistContext& dist, const std::vector<std::string>& args) {
  if (dist.rank() != 0) return kExitOk;
  Flags f(args, {"--json"}, "plan");
  const bool json = f.has("--json");
  const int ranks = static_cast<int>(f.integer("--ranks", 1, 1, 1 << 20));
  const std::string kind = f.get("--device", "cpu");
  const int64_t per_node = f.integer("--ranks-per-node", 0, 1, 1 << 20);
  // A positive number up to `most`, or 0 when the flag is not given.
  auto read = [&f](const char* name, double most) {
    const std::string text = f.get(name, "");
    if (text.empty()) return 0.0;
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (*end != '\0' || !std::isfinite(v) || v <= 0 || v > most) {
      throw InputError(str_cat("plan: ", name, ": expected a positive number",
                               most < 1e300 ? str_cat(" up to ", most) : std::string(), ", got ", capped(text)));
    }
    return v;
  };
  const double mfu = read("--mfu", 1), busbw = read("--busbw", 1e308), inter = read("--inter-busbw", 1e308);
  const double memory_gib = read("--memory-gib", 1e308);
  f.done();
  const Config config = resolve_config(parse_config_args(f.positional(), /*require_path=*/true));
  setup_rank(dist, config);  // the process as training sets it up (allocator; threads are set per calibration)
  const DataSection& d = config.data;
  accumulation_steps(d, ranks);  // refuse a batch the ranks cannot split before calibrating
  int64_t data_vocab = 0;
  if (config.model.init.empty() && config.model.config.empty() && config.model.vocab_size == 0 && !d.train.empty()) {
    data_vocab = TokenShardReader(expand_data_paths(d.train, "data.train").front()).attrs().vocab_size;
  }
  PlanInput in;
  in.config = config;
  in.ranks = ranks;
  in.model = planned_model_config(config, data_vocab);
  in.device = plan_device(kind, ranks);
  if (per_node > 0) in.device.ranks_per_node = static_cast<int>(per_node);
  if (mfu > 0) in.device.mfu = mfu;
  if (busbw > 0) in.device.busbw_intra = busbw * 1e9;
  if (inter > 0) in.device.busbw_inter = inter * 1e9;
  if (memory_gib > 0) in.device.memory_bytes = memory_gib * 1073741824.0;
  if (kind == "cpu") {
    const int threads = intra_op_threads(static_cast<int>(config.dist.intra_op_threads), cores_on_node(),
                                         cores_available(), std::min(ranks, in.device.ranks_per_node));
    in.calibration = calibrate_cpu(in, threads);
  }
  const Plan p = make_plan(in);
  if (json) {
    std::cout << plan_to_json(in, p).dump(1) << std::endl;
    return kExitOk;
  }
  const double gib = 1073741824.0;
  std::printf("plan: %s, %d rank(s) on %s, ZeRO %lld%s%s\n", in.model.model_type.c_str(), ranks, kind.c_str(),
              static_cast<long long>(config.parallel.zero_stage), config.optim.offload == "cpu" ? " + offload" : "",
              p.checkpoint_every > 0 ? str_cat(", recomputing every ", p.checkpoint_every, " block(s)").c_str() : "");
  std::printf("  parameters   %.3f B trainable, %.3f B frozen\n", p.trainable / 1e9, p.frozen / 1e9);
  std::printf("  memory/rank  params %.2f GiB, grads %.2f, optimizer %.2f%s, activations %.2f, buffers %.2f\n",
              p.memory.params / gib, p.memory.grads / gib, p.memory.optimizer / gib,
              p.memory.optimizer_on_host > 0 ? " (host)" : "", p.memory.activations / gib, p.memory.buffers / gib);
  std::printf("  total        %.2f GiB of %.2f GiB: %s; smallest rank count that fits: %s\n", p.memory.total / gib,
              rank_memory_bytes(in.device, ranks) / gib, p.fits ? "fits" : "DOES NOT FIT",
              p.smallest_ranks > 0 ? std::to_string(p.smallest_ranks).c_str() : "none up to 65536");
  std::printf("  step         %.3f s (compute %.3f, optimizer %.3f, offload %.3f, exposed comm %.3f of %.3f); "
              "%.1f tokens/s\n",
              p.step_s, p.compute_s, p.optimizer_s, p.offload_s, p.exposed_comm_s, p.comm_s, p.tokens_per_s);
  std::printf("  assumes      %s\n", p.note.c_str());
  return kExitOk;
}

int cmd_version(const DistContext& dist) {
  if (dist.rank() != 0) return kExitOk;
  std::printf("shardtune %s (libtorch %s, CUDA support in build: %s, CUDA devices: %d)\n",
              kShardtuneVersion, TORCH_VERSION, kShardtuneWithCuda ? "yes" : "no",
              static_cast<int>(torch::cuda::device_count()));
  return kExitOk;
}

int dispatch(DistContext& dist, const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "help" || argv[0] == "--help" || argv[0] == "-h") {
    if (dist.rank() == 0) std::fputs(kUsage, argv.empty() ? stderr : stdout);
    return argv.empty() ? kExitBadInput : kExitOk;
  }
  const std::string& command = argv[0];
  const std::vector<std::string> args(argv.begin() + 1, argv.end());
  if (command == "info") return cmd_info(dist, args);
  if (command == "config") return cmd_config(dist, args);
  if (command == "generate") return cmd_generate(dist, args);
  if (command == "prep") return cmd_prep(dist, args);
  if (command == "inspect") return cmd_inspect(dist, args);
  if (command == "data") return cmd_data(dist, args);
  if (command == "train") return cmd_train(dist, args);
  if (command == "eval") return cmd_eval(dist, args);
  if (command == "export") return cmd_export(dist, args);
  if (command == "convert") return cmd_convert(dist, args);
  if (command == "plan") return cmd_plan(dist, args);
  if (command == "version" || command == "--version") return cmd_version(dist);
  throw InputError(str_cat("unknown command '", command, "'\n", kUsage));
}

}  // namespace
}  // namespace shardtune

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  // Before MPI starts: a time-limit or preemption signal that comes while
  // the ranks start up stops training at its first step, saved.
  if (!args.empty() && args[0] == "train") shardtune::catch_stop_signals();
  return shardtune::run_rank_main(
      [&](shardtune::DistContext& dist) { return shardtune::dispatch(dist, args); });
}
