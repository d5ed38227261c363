#include "shardtune/data/prep.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"
#include "shardtune/data/token_shard.h"
#include "shardtune/tokenize/chat.h"

namespace shardtune {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;
// A block, the unit a worker converts: up to 512 lines or documents, ending
// at the first past 256 KiB, so that even a few MB of long documents spread
// over every thread.
constexpr size_t kBlockLines = 512;
constexpr int64_t kBlockBytes = 256 << 10;

struct Line {
  std::string text;
  std::string where;  // file:line
};

struct Example {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  int split = 0;       // 0 train, 1 val
  bool chat = false;   // rendered with the chat format
  std::string error;   // non-empty: a bad line
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

class Converter {
 public:
  Converter(const Tokenizer& tok, const PrepOptions& o) : tok_(tok), o_(o), format_(resolve_chat_format(tok, o.chat_template)) {}

  const ChatFormat& format() const { return format_; }

  Example convert(const Line& line, bool plain_text) const {
    Example ex;
    ex.split = (fnv1a(line.text) % 1000000) < static_cast<uint64_t>(o_.val_fraction * 1000000.0) ? 1 : 0;
    try {
      if (plain_text) {
        text_example(line.text, ex);
        return ex;
      }
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line.text);
      } catch (const nlohmann::json::exception& e) {
        throw InputError(str_cat("not a JSON object: ", without_exception_tag(e.what())));
      }
      if (!j.is_object()) throw InputError("not a JSON object");
      std::string format = o_.format;
      if (format == "auto") {
        format = j.contains("messages") ? "chat"
                 : j.contains("prompt") ? "prompt_completion"
                 : j.contains("text") ? "text"
                                      : "";
        if (format.empty()) throw InputError("has none of the fields messages, prompt/completion, text");
      }
      if (format == "chat") {
        chat_example(j, ex);
        ex.chat = true;
      } else if (format == "prompt_completion") {
        const std::string prompt = string_field(j, "prompt");
        const std::string completion = string_field(j, "completion");
        begin(ex);
        add(ex, tok_.encode(prompt), 0);
        add(ex, tok_.encode(completion), 1);
        if (tok_.eos_id() >= 0) add(ex, {tok_.eos_id()}, 1);
      } else {
        text_example(string_field(j, "text"), ex);
      }
    } catch (const InputError& e) {
      ex.error = str_cat(line.where, ": ", e.what());
    }
    return ex;
  }

 private:
  static std::string string_field(const nlohmann::json& j, const char* key) {
    const auto it = j.find(key);
    if (it == j.end()) throw InputError(str_cat("no '", key, "' field"));
    if (!it->is_string()) throw InputError(str_cat("'", key, "' is not a string"));
    return it->get<std::string>();
  }

  void begin(Example& ex) const {
    if (tok_.bos_id() >= 0) add(ex, {tok_.bos_id()}, 0);
  }
  static void add(Example& ex, const std::vector<int32_t>& ids, uint8_t m) {
    ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
    ex.mask.insert(ex.mask.end(), ids.size(), m);
  }

  void text_example(const std::string& text, Example& ex) const {
    check_utf8(text, "text");
    if (trim(text).empty()) throw InputError("empty text");
    begin(ex);
    add(ex, tok_.encode(text), 1);
    if (tok_.eos_id() >= 0) add(ex, {tok_.eos_id()}, 1);
  }

  void chat_example(const nlohmann::json& j, Example& ex) const {
    const auto it = j.find("messages");
    if (it == j.end() || !it->is_array()) throw InputError("no 'messages' list");
    if (it->empty()) throw InputError("'messages' is empty");
    std::vector<ChatMessage> msgs;
    bool has_assistant = false;
    for (size_t i = 0; i < it->size(); ++i) {
      msgs.push_back(parse_chat_message((*it)[i], str_cat("message ", i)));
      has_assistant = has_assistant || (msgs.back().role == "assistant" && msgs.back().train);
    }
    if (!has_assistant && !o_.train_on_all) {
      throw InputError("no assistant message to train on (none, or every one has weight 0)");
    }
    Tokenized t = render_chat(tok_, format_.kind, template_messages(format_, std::move(msgs)), o_.train_on_all);
    ex.ids = std::move(t.ids);
    ex.mask = std::move(t.mask);
  }

  const Tokenizer& tok_;
  const PrepOptions& o_;
  ChatFormat format_;
};

// Reads examples from the inputs in blocks of lines.
class LineSource {
 public:
  explicit LineSource(const std::vector<std::string>& inputs) : inputs_(inputs) {}

  // The next block; empty at the end. plain_text says whether it is .txt documents.
  std::vector<Line> next_block(bool& plain_text) {
    std::vector<Line> block;
    while (block.empty()) {
      if (!in_.is_open()) {
        if (file_ >= inputs_.size()) return block;
        in_.open(inputs_[file_], std::ios::binary);
        if (!in_) throw InputError(str_cat(inputs_[file_], ": cannot open"));
        lineno_ = 0;
      }
      const std::string& name = inputs_[file_];
      plain_text = ends_with(name, ".txt");
      std::string line;
      if (plain_text) {
        // Documents are separated by blank lines.
        std::string doc;
        int64_t first = 0;
        int64_t block_bytes = 0;  // of the documents in the block: it ends between two
        while (block.size() < kBlockLines && block_bytes < kBlockBytes && std::getline(in_, line)) {
          ++lineno_;
          bytes_ += static_cast<int64_t>(line.size()) + 1;
          if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
          if (trim(line).empty()) {
            if (!doc.empty()) {
              block_bytes += static_cast<int64_t>(doc.size());
              block.push_back({doc, str_cat(name, ":", first)});
            }
            doc.clear();
            continue;
          }
          if (doc.empty()) first = lineno_;
          doc += doc.empty() ? line : "\n" + line;
        }
        if (!doc.empty()) block.push_back({doc, str_cat(name, ":", first)});
      } else {
        int64_t block_bytes = 0;
        while (block.size() < kBlockLines && block_bytes < kBlockBytes && std::getline(in_, line)) {
          ++lineno_;
          bytes_ += static_cast<int64_t>(line.size()) + 1;
          if (!line.empty() && line.back() == '\r') line.pop_back();
          if (trim(line).empty()) continue;
          block_bytes += static_cast<int64_t>(line.size());
          block.push_back({std::move(line), str_cat(name, ":", lineno_)});
        }
      }
      if (block.empty() || in_.eof()) {
        if (in_.eof()) {
          in_.close();
          ++file_;
        }
      }
      if (!block.empty()) return block;
    }
    return block;
  }

  int64_t bytes() const { return bytes_; }

 private:
  const std::vector<std::string>& inputs_;
  size_t file_ = 0;
  std::ifstream in_;
  int64_t lineno_ = 0;
  int64_t bytes_ = 0;
};

// Blocks converted by a pool of threads and handed back in the order they
// were submitted, so the caller reads and writes while the workers convert.
// One caller thread submits and takes; the destructor stops and joins the
// workers, also when the caller leaves by an exception.
class ConvertPool {
 public:
  ConvertPool(const Converter& convert, int threads) : convert_(convert) {
    for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { work(); });
  }
  ~ConvertPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  ConvertPool(const ConvertPool&) = delete;
  ConvertPool& operator=(const ConvertPool&) = delete;

  void submit(std::vector<Line> lines, bool plain) {
    auto job = std::make_shared<Job>();
    job->lines = std::move(lines);
    job->plain = plain;
    {
      std::lock_guard<std::mutex> lock(mu_);
      order_.push_back(job);
      todo_.push_back(job);
    }
    work_cv_.notify_one();
  }
  size_t in_flight() const { return order_.size(); }  // the caller's thread alone changes it

  // The oldest submitted block's examples, waiting for its conversion;
  // rethrows what the conversion threw. Requires in_flight() > 0.
  std::vector<Example> next() {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [&] { return order_.front()->done; });
      job = std::move(order_.front());
      order_.pop_front();
    }
    if (job->error) std::rethrow_exception(job->error);
    return std::move(job->out);
  }

 private:
  struct Job {
    std::vector<Line> lines;
    bool plain = false;
    std::vector<Example> out;
    std::exception_ptr error;
    bool done = false;  // guarded by mu_
  };

  void work() {
    while (true) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(lock, [&] { return stop_ || !todo_.empty(); });
        if (stop_) return;
        job = std::move(todo_.front());
        todo_.pop_front();
      }
      try {
        job->out.reserve(job->lines.size());
        for (const auto& line : job->lines) job->out.push_back(convert_.convert(line, job->plain));
      } catch (...) {
        job->error = std::current_exception();
      }
      job->lines = {};
      {
        std::lock_guard<std::mutex> lock(mu_);
        job->done = true;
      }
      done_cv_.notify_one();
    }
  }

  const Converter& convert_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::shared_ptr<Job>> order_;  // submitted, not yet taken by next()
  std::deque<std::shared_ptr<Job>> todo_;   // submitted, not yet started
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

std::string shard_name(const std::string& prefix, int split, int index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "-%s-%05d.h5", split == 0 ? "train" : "val", index);
  return prefix + buf;
}

// The folders made for an output (the missing ancestors of dir): removed
// again, innermost first and only when still empty, unless keep() is called.
class MadeFolders {
 public:
  explicit MadeFolders(const fs::path& dir) {
    for (fs::path d = dir; !d.empty() && !fs::exists(d); d = d.parent_path()) made_.push_back(d);
    if (!made_.empty()) fs::create_directories(made_.front());
  }
  ~MadeFolders() {
    std::error_code ec;
    for (const auto& d : made_) fs::remove(d, ec);  // fails harmlessly when not empty
  }
  MadeFolders(const MadeFolders&) = delete;
  MadeFolders& operator=(const MadeFolders&) = delete;
  void keep() { made_.clear(); }

 private:
  std::vector<fs::path> made_;
};

}  // namespace

PrepSummary run_prep(const PrepOptions& o) {
  const auto start = Clock::now();
  if (o.inputs.empty()) throw InputError("prep: no --input given");
  if (o.output.empty()) throw InputError("prep: no --output prefix given");
  if (!(o.val_fraction >= 0 && o.val_fraction <= 1)) throw InputError("prep: --val-fraction must be in [0, 1]");
  if (o.shard_tokens <= 0) throw InputError("prep: --shard-tokens must be positive");
  if (o.format != "auto" && o.format != "chat" && o.format != "prompt_completion" && o.format != "text") {
    throw InputError(str_cat("prep: --format '", o.format, "' is not one of chat, prompt_completion, text, auto"));
  }
  for (const auto& in : o.inputs) {
    if (!fs::exists(in)) throw InputError(str_cat(in, ": no such input file"));
    if (fs::is_directory(in)) throw InputError(str_cat(in, ": is a directory (give the files in it)"));
  }
  const auto existing_train = find_shards(o.output, "train");
  const auto existing_val = find_shards(o.output, "val");
  // An input that is one of the shards this run writes (or replaces) would be destroyed.
  for (const auto& in : o.inputs) {
    std::error_code ec;
    const fs::path p = fs::weakly_canonical(fs::absolute(in), ec);
    const fs::path out = fs::weakly_canonical(fs::absolute(o.output), ec);
    const std::string name = p.filename().string(), stem = out.filename().string();
    const bool shard_name = (name.rfind(stem + "-train-", 0) == 0 || name.rfind(stem + "-val-", 0) == 0) &&
                            name.size() > 3 && name.compare(name.size() - 3, 3, ".h5") == 0;
    if (!ec && (p == out || (p.parent_path() == out.parent_path() && shard_name))) {
      throw InputError(str_cat("prep: the input ", in, " is one of the shards --output ", o.output,
                               " writes; write elsewhere"));
    }
  }
  if ((!existing_train.empty() || !existing_val.empty()) && !o.overwrite) {
    throw InputError(str_cat(o.output, ": output exists (", (existing_train.empty() ? existing_val : existing_train)[0],
                             "); pass --overwrite to replace it"));
  }
  MadeFolders made(fs::path(o.output).parent_path());

  auto tok = load_tokenizer(o.tokenizer);
  const Converter convert(*tok, o);
  PrepSummary sum;
  ShardAttrs attrs{tok->vocab_size(), tok->bos_id(), tok->eos_id(), tok->pad_id(), tok->fingerprint(), tok->name(), ""};
  bool any_chat = false;
  sum.tokenizer = str_cat(attrs.tokenizer_name, " (", attrs.tokenizer, ")");

  std::vector<std::pair<std::string, std::string>> parts;  // finished shards: temporary name, final name
  std::optional<TokenShardWriter> writer[2];
  int index[2] = {0, 0};
  auto cleanup = [&] {
    for (auto& w : writer) w.reset();
    for (const auto& p : parts) fs::remove(p.first);
  };
  auto finish_shard = [&](int split) {
    if (!writer[split]) return;
    parts.emplace_back(writer[split]->finish(/*place=*/false), shard_name(o.output, split, index[split]++));
    writer[split].reset();
  };

  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  LineSource source(o.inputs);
  auto last_progress = Clock::now();
  try {
    // Workers convert while this thread reads ahead (up to 4 blocks a
    // worker) and writes the converted blocks in input order.
    ConvertPool pool(convert, threads);
    const size_t ahead = static_cast<size_t>(threads) * 4;
    bool read_all = false;
    while (true) {
      while (!read_all && pool.in_flight() < ahead) {
        bool plain = false;
        auto block = source.next_block(plain);
        if (block.empty()) {
          read_all = true;
        } else {
          pool.submit(std::move(block), plain);
        }
      }
      if (pool.in_flight() == 0) break;
      std::vector<Example> block = pool.next();
      for (auto& ex : block) {
        if (!ex.error.empty()) {
          if (!o.skip_bad) throw InputError(ex.error + " (--skip-bad skips such lines)");
          ++sum.skipped;
          continue;
        }
        const int s = ex.split;
        const auto n = static_cast<int64_t>(ex.ids.size());
        if (writer[s] && writer[s]->docs() > 0 && writer[s]->tokens() + n > o.shard_tokens) finish_shard(s);
        if (!writer[s]) writer[s].emplace(shard_name(o.output, s, index[s]), attrs, true);
        writer[s]->add(ex.ids.data(), ex.mask.data(), ex.ids.size());
        any_chat = any_chat || ex.chat;
        sum.examples[s] += 1;
        sum.tokens[s] += n;
        sum.targets[s] += std::count(ex.mask.begin(), ex.mask.end(), uint8_t{1});
      }
      if (o.progress && Clock::now() - last_progress > std::chrono::milliseconds(500)) {
        last_progress = Clock::now();
        const double secs = std::chrono::duration<double>(last_progress - start).count();
        const double mb = static_cast<double>(source.bytes()) / 1e6;
        const double toks = static_cast<double>(sum.tokens[0] + sum.tokens[1]);
        std::fprintf(stderr, "\rprep: %.1f MB read (%.1f MB/s), %.0f tokens (%.0f tokens/s), %ld examples   ", mb,
                     mb / secs, toks, toks / secs, static_cast<long>(sum.examples[0] + sum.examples[1]));
      }
    }
    finish_shard(0);
    finish_shard(1);
    if (any_chat) {
      sum.chat_format = chat_format_id(convert.format());
      for (const auto& p : parts) set_shard_chat_format(p.first, sum.chat_format);
    }
  } catch (...) {
    cleanup();
    throw;
  }
  if (o.progress) std::fprintf(stderr, "\n");
  if (parts.empty()) {
    throw InputError(str_cat("prep: no examples in ", join(o.inputs, ", "),
                             sum.skipped ? str_cat(" (", sum.skipped, " bad lines skipped)") : ""));
  }
  // Everything is written: replace the old output, then move the new into place.
  for (const auto& f : existing_train) fs::remove(f);
  for (const auto& f : existing_val) fs::remove(f);
  for (const auto& [tmp, final_name] : parts) {
    fs::rename(tmp, final_name);
    sum.files.push_back(final_name);
  }
  made.keep();
  sum.input_bytes = source.bytes();
  sum.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return sum;
}

std::string format_summary(const PrepSummary& s) {
  std::string out;
  const char* names[2] = {"train", "val"};
  for (int i = 0; i < 2; ++i) {
    if (s.examples[i] == 0) continue;
    out += str_cat(names[i], ": ", s.examples[i], " examples, ", s.tokens[i], " tokens, ",
                   s.tokens[i] ? 100.0 * static_cast<double>(s.targets[i]) / static_cast<double>(s.tokens[i]) : 0.0,
                   "% of them targets\n");
  }
  const double total = static_cast<double>(s.tokens[0] + s.tokens[1]);
  char rate[160];
  std::snprintf(rate, sizeof(rate), "%.1f MB in %.2f s: %.2f MB/s, %.0f tokens/s\n", s.input_bytes / 1e6, s.seconds,
                s.input_bytes / 1e6 / std::max(s.seconds, 1e-9), total / std::max(s.seconds, 1e-9));
  out += rate;
  out += str_cat("tokenizer ", s.tokenizer, s.chat_format.empty() ? "" : str_cat(", chat format ", s.chat_format), "\n");
  out += str_cat(s.files.size(), " shard(s) written, ", s.skipped, " bad line(s) skipped\n");
  for (const auto& f : s.files) out += "  " + f + "\n";
  return out;
}

}  // namespace shardtune
