#include "shardtune/data/data_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>

#include "shardtune/core/error.h"
#include "shardtune/core/files.h"
#include "shardtune/core/strings.h"
#include "shardtune/tokenize/chat.h"

namespace shardtune {
namespace fs = std::filesystem;
namespace {

using json = nlohmann::json;

// What each kind means, for the report.
const std::map<std::string, std::string>& kind_text() {
  static const std::map<std::string, std::string> t = {
      {"invalid_utf8", "not valid UTF-8"},
      {"invalid_json", "not valid JSON"},
      {"not_an_object", "not a JSON object"},
      {"missing_messages", "no 'messages' field"},
      {"messages_not_a_list", "'messages' is not a list of message objects"},
      {"empty_messages", "'messages' is empty"},
      {"unknown_role", "a role other than system, user, assistant (or none)"},
      {"missing_content", "a message without a string 'content'"},
      {"no_assistant_turn", "no assistant message to train on (none, or all with weight 0)"},
      {"unknown_key", "top-level keys prep ignores (it reads messages)"},
      {"unknown_message_key", "a message key other than role, content, weight, name"},
      {"bad_content_part", "a content part other than {\"type\": \"text\", \"text\": ...}"},
      {"bad_weight", "a weight other than 0 or 1, or on a message that is not the assistant's"},
      {"empty_content", "a message whose content is empty or only whitespace"},
      {"roles_out_of_order", "roles out of order (system first only, then user and assistant alternating)"},
      {"ends_without_assistant", "the last message is not the assistant's (its turn is not trained)"},
      {"duplicate", "the same messages as an earlier line"},
  };
  return t;
}

TokenStats stats_of(std::vector<int64_t> v) {
  TokenStats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.count = static_cast<int64_t>(v.size());
  for (int64_t x : v) s.total += static_cast<double>(x);
  s.mean = s.total / static_cast<double>(v.size());
  s.min = static_cast<double>(v.front());
  s.max = static_cast<double>(v.back());
  // Nearest-rank percentiles.
  auto pct = [&](double p) {
    const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return static_cast<double>(v[std::min(v.size(), std::max<size_t>(rank, 1)) - 1]);
  };
  s.p50 = pct(50);
  s.p90 = pct(90);
  s.p99 = pct(99);
  return s;
}

std::string line_list(const std::vector<int64_t>& lines, size_t show = 12) {
  std::string out;
  for (size_t i = 0; i < std::min(show, lines.size()); ++i) out += (i ? ", " : "") + std::to_string(lines[i]);
  if (lines.size() > show) out += str_cat(", ... (", lines.size() - show, " more)");
  return out;
}

bool valid_utf8(std::string_view s) {
  try {
    check_utf8(s, "line");
    return true;
  } catch (const InputError&) {
    return false;
  }
}

}  // namespace

DataCheckResult check_chat_data(const DataCheckOptions& o) {
  DataCheckResult r;
  std::ifstream in(o.input, std::ios::binary);
  if (!in) throw InputError(str_cat(o.input, ": cannot open"));
  ChatFormat format;
  if (o.tokenizer != nullptr) {
    format = resolve_chat_format(*o.tokenizer, o.chat_template);
    r.chat_template = to_string(format.kind);
    r.tokenized = true;
  }
  std::unordered_map<std::string, int64_t> seen;  // messages, as canonical JSON -> first line
  std::string line;
  int64_t lineno = 0;
  auto error = [&](const std::string& kind) { r.errors[kind].push_back(lineno); };
  auto warn = [&](const std::string& kind) {
    auto& v = r.warnings[kind];
    if (v.empty() || v.back() != lineno) v.push_back(lineno);
  };
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    ++r.lines;
    if (!valid_utf8(line)) {
      error("invalid_utf8");
      continue;
    }
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      error("invalid_json");
      continue;
    }
    if (!j.is_object()) {
      error("not_an_object");
      continue;
    }
    for (const auto& [k, v] : j.items()) {
      if (k != "messages") warn("unknown_key");
    }
    const auto it = j.find("messages");
    if (it == j.end()) {
      error("missing_messages");
      continue;
    }
    if (!it->is_array() || std::any_of(it->begin(), it->end(), [](const json& m) { return !m.is_object(); })) {
      error("messages_not_a_list");
      continue;
    }
    if (it->empty()) {
      error("empty_messages");
      continue;
    }
    std::vector<ChatMessage> msgs;
    bool bad = false, has_assistant = false;
    for (const auto& m : *it) {
      const std::string role = m.contains("role") && m["role"].is_string() ? m["role"].get<std::string>() : "";
      if (role != "system" && role != "user" && role != "assistant") {
        error("unknown_role");
        bad = true;
        break;
      }
      if (!m.contains("content") || !(m["content"].is_string() || m["content"].is_array())) {
        error("missing_content");
        bad = true;
        break;
      }
      try {  // what is left: content parts, weight, keys
        msgs.push_back(parse_chat_message(m, "message"));
      } catch (const InputError& e) {
        const std::string what = e.what();
        error(what.find("has the key") != std::string::npos    ? "unknown_message_key"
              : what.find("content part") != std::string::npos ? "bad_content_part"
                                                               : "bad_weight");
        bad = true;
        break;
      }
      has_assistant = has_assistant || (role == "assistant" && msgs.back().train);
    }
    if (bad) continue;
    if (!has_assistant && !o.train_on_all) {
      error("no_assistant_turn");
      continue;
    }
    // Warnings: content, order, the end, duplicates.
    for (const auto& m : msgs) {
      if (trim(m.content).empty()) warn("empty_content");
    }
    size_t i = msgs[0].role == "system" ? 1 : 0;
    for (size_t k = i; k < msgs.size(); ++k) {
      if (msgs[k].role != ((k - i) % 2 == 0 ? "user" : "assistant")) {
        warn("roles_out_of_order");
        break;
      }
    }
    if (msgs.back().role != "assistant") warn("ends_without_assistant");
    const auto [dup, fresh] = seen.emplace(it->dump(), lineno);
    if (!fresh) warn("duplicate");
    ++r.examples;
    if (o.tokenizer != nullptr) {
      try {
        const Tokenized t = render_chat(*o.tokenizer, format.kind, template_messages(format, msgs), o.train_on_all);
        const int64_t n = static_cast<int64_t>(t.ids.size());
        int64_t trained = 0;
        for (uint8_t m : t.mask) trained += m;
        r.tokens.push_back(n);
        r.trained.push_back(trained);
        if (o.seq_len > 0 && n > o.seq_len + 1) r.over_window.push_back(lineno);
        if (o.model_context > 0 && n > o.model_context) r.over_context.push_back(lineno);
      } catch (const InputError& e) {
        // What the template refuses (Gemma: roles not alternating, a system message it has no role for).
        --r.examples;
        r.errors[str_cat("template: ", e.what())].push_back(lineno);
      }
    }
  }
  if (lineno == 0 && in.bad()) throw InputError(str_cat(o.input, ": cannot read"));
  r.token_stats = stats_of(r.tokens);
  r.trained_stats = stats_of(r.trained);
  if (o.seq_len > 0 && !r.tokens.empty()) {
    // sft packing, as TokenDataset does it: whole examples in order, greedily,
    // into windows of seq_len + 1 tokens; a longer one is cut to a window.
    const int64_t window = o.seq_len + 1;
    int64_t used = 0, in_window = 0;
    for (size_t k = 0; k < r.tokens.size(); ++k) {
      const int64_t len = std::min(r.tokens[k], window);
      // The trained tokens a cut example keeps: at most the window's.
      r.trained_per_epoch += std::min(r.trained[k], len);
      r.tokens_per_epoch += len;
      if (used + len > window && in_window > 0) {
        ++r.windows;
        used = 0;
        in_window = 0;
      }
      used += len;
      ++in_window;
    }
    if (in_window > 0) ++r.windows;
    if (o.global_batch > 0) r.steps_per_epoch = (r.windows + o.global_batch - 1) / o.global_batch;
  }
  return r;
}

std::string format_data_check(const DataCheckResult& r, const DataCheckOptions& o) {
  std::ostringstream s;
  s << o.input << ": " << r.lines << " lines, " << r.examples << " valid examples\n";
  auto kinds = [&](const char* title, const std::map<std::string, std::vector<int64_t>>& m) {
    if (m.empty()) {
      s << title << ": none\n";
      return;
    }
    int64_t n = 0;
    for (const auto& [k, v] : m) n += static_cast<int64_t>(v.size());
    s << title << ": " << n << "\n";
    for (const auto& [k, v] : m) {
      const auto t = kind_text().find(k);
      s << "  " << k << " (" << v.size() << "): " << (t != kind_text().end() ? t->second : "") << "\n"
        << "    lines " << line_list(v) << "\n";
    }
  };
  kinds("errors (prep refuses these lines)", r.errors);
  kinds("warnings", r.warnings);
  if (!r.tokenized) {
    s << "tokens: not counted (give --model or --tokenizer)\n";
    return s.str();
  }
  auto row = [&](const char* name, const TokenStats& t) {
    char buf[256];
    std::snprintf(buf, sizeof(buf), "  %-24s %8.0f %9.1f %8.0f %8.0f %8.0f %8.0f\n", name, t.min, t.mean, t.p50, t.p90,
                  t.p99, t.max);
    s << buf;
  };
  s << "tokens per example (chat template " << r.chat_template << ", as prep renders it):\n";
  char head[256];
  std::snprintf(head, sizeof(head), "  %-24s %8s %9s %8s %8s %8s %8s\n", "", "min", "mean", "p50", "p90", "p99", "max");
  s << head;
  row("tokens", r.token_stats);
  row("trained (assistant)", r.trained_stats);
  if (r.token_stats.total > 0) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "  %.0f tokens, %.0f trained on (%.1f%%)\n", r.token_stats.total,
                  r.trained_stats.total, 100.0 * r.trained_stats.total / r.token_stats.total);
    s << buf;
  }
  if (o.seq_len > 0) {
    s << "  longer than a window (seq_len " << o.seq_len << " + 1; cut): " << r.over_window.size()
      << (r.over_window.empty() ? "" : ", lines " + line_list(r.over_window)) << "\n";
  }
  if (o.model_context > 0) {
    s << "  longer than the model's context (" << o.model_context << "): " << r.over_context.size()
      << (r.over_context.empty() ? "" : ", lines " + line_list(r.over_context)) << "\n";
  }
  if (o.seq_len > 0 && !r.tokens.empty()) {
    s << "per epoch (sft packing into windows of " << o.seq_len + 1 << " tokens): " << r.windows << " windows, "
      << r.tokens_per_epoch << " tokens, " << r.trained_per_epoch << " trained";
    if (o.global_batch > 0) s << ", " << r.steps_per_epoch << " steps at global batch " << o.global_batch;
    s << "\n";
  }
  return s.str();
}

std::string data_check_json(const DataCheckResult& r, const DataCheckOptions& o) {
  auto stats = [](const TokenStats& t) {
    return json{{"count", t.count}, {"min", t.min}, {"mean", t.mean}, {"p50", t.p50}, {"p90", t.p90},
                {"p99", t.p99}, {"max", t.max}, {"total", t.total}};
  };
  json j = {{"input", o.input}, {"lines", r.lines}, {"examples", r.examples}, {"errors", r.errors},
            {"warnings", r.warnings}, {"ok", r.ok()}};
  if (r.tokenized) {
    j["chat_template"] = r.chat_template;
    j["tokens"] = stats(r.token_stats);
    j["trained"] = stats(r.trained_stats);
    j["seq_len"] = o.seq_len;
    j["model_context"] = o.model_context;
    j["over_window"] = r.over_window;
    j["over_context"] = r.over_context;
    j["windows"] = r.windows;
    j["tokens_per_epoch"] = r.tokens_per_epoch;
    j["trained_per_epoch"] = r.trained_per_epoch;
    j["global_batch"] = o.global_batch;
    j["steps_per_epoch"] = r.steps_per_epoch;
  }
  return j.dump(1) + "\n";
}

std::string write_data_check(const DataCheckResult& r, const DataCheckOptions& o, const std::string& dir,
                             std::string& why) {
  fs::create_directories(dir);
  write_file_atomically((fs::path(dir) / "data_check.txt").string(), format_data_check(r, o));
  write_file_atomically((fs::path(dir) / "data_check.json").string(), data_check_json(r, o));
  const fs::path png = fs::path(dir) / "data_check.png";
  if (!r.tokenized || r.tokens.empty()) {
    why = "no tokens counted";
    return "";
  }
  if (!program_on_path("gnuplot")) {
    why = "gnuplot is not installed (apt-get install gnuplot-nox)";
    return "";
  }
  // Histograms of both counts over the same bins.
  const int64_t hi = std::max<int64_t>(1, static_cast<int64_t>(r.token_stats.max));
  const int64_t bins = std::min<int64_t>(50, hi);
  const double width = static_cast<double>(hi) / static_cast<double>(bins);
  std::vector<int64_t> a(static_cast<size_t>(bins) + 1, 0), b(a.size(), 0);
  for (size_t k = 0; k < r.tokens.size(); ++k) {
    ++a[static_cast<size_t>(static_cast<double>(r.tokens[k]) / width)];
    ++b[static_cast<size_t>(static_cast<double>(r.trained[k]) / width)];
  }
  std::ostringstream dat;
  for (size_t k = 0; k < a.size(); ++k) dat << (static_cast<double>(k) + 0.5) * width << " " << a[k] << " " << b[k] << "\n";
  // Every file but the picture under a temporary name of its own.
  const fs::path dat_path = write_temp_file((fs::path(dir) / "data_check.dat").string(), dat.str());
  const std::string png_tmp = create_temp_file(png.string());
  std::ostringstream gp;
  gp << "set terminal png size 900,540\nset output " << gnuplot_quote(png_tmp) << "\n"
     << "set title " << gnuplot_quote(str_cat("tokens per example: ", fs::path(o.input).filename().string(), " (",
                                          r.examples, " examples, template ", r.chat_template, ")"))
     << "\nset xlabel 'tokens'\nset ylabel 'examples'\nset style fill transparent solid 0.5\nset key top right\n"
     << "set boxwidth " << width << "\nset xrange [0:*]\n";
  int mark = 0;  // one arrow and one label per marked length
  for (const auto& [x, label] : {std::pair{o.seq_len > 0 ? o.seq_len + 1 : 0, "window (seq_len + 1)"},
                                 std::pair{o.model_context, "model context"}}) {
    if (x <= 0) continue;
    ++mark;
    gp << "set arrow " << mark << " from " << x << ", graph 0 to " << x << ", graph 1 nohead dt 2 lw 2\n"
       << "set label " << mark << " " << gnuplot_quote(label) << " at " << x << ", graph 0.95 right offset -1,0\n";
  }
  gp << "plot " << gnuplot_quote(dat_path.string()) << " using 1:2 with boxes title 'tokens', "
     << gnuplot_quote(dat_path.string()) << " using 1:3 with boxes title 'trained (assistant) tokens'\n";
  const fs::path gp_path = write_temp_file((fs::path(dir) / "data_check.gp").string(), gp.str());
  const bool drew = run_gnuplot(gp_path.string());
  fs::remove(gp_path);
  fs::remove(dat_path);
  if (!drew) {
    fs::remove(png_tmp);
    why = "gnuplot failed";
    return "";
  }
  fs::rename(png_tmp, png);
  return png.string();
}

}  // namespace shardtune
