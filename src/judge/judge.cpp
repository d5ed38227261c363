#include "shardtune/judge/judge.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "shardtune/core/error.h"
#include "shardtune/core/files.h"
#include "shardtune/core/strings.h"
#include "shardtune/judge/text_metrics.h"
#include "shardtune/model/hf_checkpoint.h"
#include "shardtune/tokenize/chat.h"
#include "shardtune/tokenize/tokenizer.h"

namespace shardtune {
namespace fs = std::filesystem;
namespace {

using json = nlohmann::json;

struct Example {
  std::string file;
  int64_t line = 0;
  std::vector<ChatMessage> prompt;
  std::string reference;
  bool reference_from_first_arm = false;  // the line ends with the user's turn
};

// A chat JSONL line's messages, checked as prep checks them.
std::vector<ChatMessage> read_messages(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw InputError(str_cat(where, ": not a JSON object: ", without_exception_tag(e.what())));
  }
  if (!j.is_object() || !j.contains("messages") || !j["messages"].is_array() || j["messages"].empty()) {
    throw InputError(str_cat(where, ": not a chat example (an object with a non-empty 'messages' list)"));
  }
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < j["messages"].size(); ++i) {
    out.push_back(parse_chat_message(j["messages"][i], str_cat(where, ": message ", i)));
    check_utf8(out.back().content, str_cat(where, ": message ", i));
  }
  return out;
}

std::vector<std::pair<int64_t, std::vector<ChatMessage>>> read_chat_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(str_cat(path, ": cannot open"));
  std::vector<std::pair<int64_t, std::vector<ChatMessage>>> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    out.emplace_back(n, read_messages(line, str_cat(path, ":", n)));
  }
  if (out.empty()) throw InputError(str_cat(path, ": no chat examples"));
  return out;
}

// A held-out file's examples: a line ending with the assistant's turn is
// scored against that turn; one ending with the user's turn is answered as
// it is and scored against the first arm's answer.
std::vector<Example> read_examples(const std::string& path, int64_t limit) {
  std::vector<Example> out;
  for (auto& [line, msgs] : read_chat_file(path)) {
    Example ex{path, line, std::move(msgs), "", false};
    const std::string role = ex.prompt.back().role;
    if (role == "assistant") {
      if (ex.prompt.size() == 1) throw InputError(str_cat(path, ":", line, ": the assistant turn to score has no prompt before it"));
      ex.reference = ex.prompt.back().content;
      ex.prompt.pop_back();
    } else if (role == "user") {
      ex.reference_from_first_arm = true;
    } else {
      throw InputError(str_cat(path, ":", line, ": ends with a ", role, " message: nothing to answer (the last message "
                               "is the user's, answered and compared with the first arm's answer, or the assistant's "
                               "reference answer)"));
    }
    out.push_back(std::move(ex));
    if (limit > 0 && static_cast<int64_t>(out.size()) == limit) break;
  }
  return out;
}

struct Arm {
  std::string name, model;
  int64_t shots = 0;
};

struct Answer {
  std::string text;
  int64_t prompt_tokens = 0, answer_tokens = 0;
  double latency_s = 0;
  bool stopped = false;  // ended by the end of turn or EOS, not by --max-new-tokens
};

// The examples of one held-out file, scored with one main metric.
struct EvalSet {
  std::string kind;  // "task" (--generate) or "general" (--general)
  std::string file, metric;
  size_t first = 0, count = 0;  // their place among every example
};

// One arm's answers to the examples of this rank (i mod W == rank).
std::map<int64_t, Answer> run_arm(const JudgeOptions& o, const Arm& arm, const std::vector<Example>& examples,
                                  const std::vector<std::vector<ChatMessage>>& shots, const DistContext& dist) {
  auto model = load_hf_model(arm.model, o.dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat32,
                             torch::Device(o.device));
  auto tok = load_tokenizer(o.tokenizer.empty() ? arm.model : o.tokenizer);
  if (!o.tokenizer.empty()) check_given_tokenizer(*tok, o.tokenizer, arm.model);
  if (o.chat_template.empty() && tok->chat_template().empty()) {
    throw InputError(str_cat(arm.model, ": its tokenizer has no chat template; name one with --chat-template"));
  }
  if (tok->vocab_size() > model->config().vocab_size) {
    throw InputError(str_cat(arm.model, ": its tokenizer has ", tok->vocab_size(), " tokens but the model only ",
                             model->config().vocab_size));
  }
  const ChatFormat format = resolve_chat_format(*tok, o.chat_template);
  SamplingOptions s = o.sampling;
  s.eos_token_ids = model->config().eos_token_ids;
  int32_t end = -1;
  try {
    end = end_of_turn_id(*tok, format.kind);
  } catch (const InputError& e) {
    throw InputError(str_cat(arm.model, ": ", e.what()));
  }
  s.eos_token_ids.push_back(end);
  // This rank's prompts, rendered.
  std::vector<size_t> mine;
  std::vector<std::vector<int64_t>> prompts;
  for (size_t i = static_cast<size_t>(dist.rank()); i < examples.size(); i += static_cast<size_t>(dist.world_size())) {
    const Example& ex = examples[i];
    std::vector<ChatMessage> msgs;
    size_t first = 0;
    if (!ex.prompt.empty() && ex.prompt[0].role == "system") msgs.push_back(ex.prompt[first++]);
    for (int64_t k = 0; k < arm.shots; ++k) {
      for (const auto& m : shots[static_cast<size_t>(k)]) msgs.push_back(m);
    }
    msgs.insert(msgs.end(), ex.prompt.begin() + static_cast<long>(first), ex.prompt.end());
    std::vector<int32_t> ids;
    try {
      ids = render_generation_prompt(*tok, format.kind, template_messages(format, msgs));
    } catch (const InputError& e) {
      throw InputError(str_cat(ex.file, ":", ex.line, ": arm ", arm.name, ": ", e.what()));
    }
    if (static_cast<int64_t>(ids.size()) + s.max_new_tokens > model->config().max_positions) {
      throw InputError(str_cat(ex.file, ":", ex.line, ": arm ", arm.name, ": the prompt (", ids.size(),
                               " tokens) and --max-new-tokens ", s.max_new_tokens, " exceed the model's context (",
                               model->config().max_positions, ")"));
    }
    mine.push_back(i);
    prompts.emplace_back(ids.begin(), ids.end());
  }
  // Batches of --batch-size, in order; an answer's latency is its batch's time over its rows.
  std::map<int64_t, Answer> out;
  const size_t bs = static_cast<size_t>(std::max<int64_t>(o.batch_size, 1));
  for (size_t start = 0; start < prompts.size(); start += bs) {
    const size_t end_row = std::min(prompts.size(), start + bs);
    const std::vector<std::vector<int64_t>> batch(prompts.begin() + static_cast<long>(start),
                                                  prompts.begin() + static_cast<long>(end_row));
    const auto t0 = std::chrono::steady_clock::now();
    const auto gens = generate_batch(*model, batch, s);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (size_t r = 0; r < batch.size(); ++r) {
      std::vector<int32_t> gen(gens[r].begin(), gens[r].end());
      Answer a;
      a.prompt_tokens = static_cast<int64_t>(batch[r].size());
      a.answer_tokens = static_cast<int64_t>(gen.size());
      if (!gen.empty() &&
          std::find(s.eos_token_ids.begin(), s.eos_token_ids.end(), gen.back()) != s.eos_token_ids.end()) {
        gen.pop_back();
        a.stopped = true;
      }
      a.text = tok->decode(gen, /*skip_special=*/true);
      a.latency_s = dt / static_cast<double>(batch.size());
      out[static_cast<int64_t>(mine[start + r])] = a;
    }
  }
  return out;
}

// One set's scores per arm: the summary's entries, the console table, the
// report's table and the chart's rows; examples.jsonl's lines are appended.
struct SetReport {
  json arms = json::array();
  std::string table, md, dat;
  Interval last_diff;
};

SetReport score_set(const EvalSet& set, const std::vector<Example>& examples, const std::vector<Arm>& arms,
                    const std::vector<std::vector<Answer>>& got, const std::vector<std::string>& metrics,
                    const TextScorer& scorer, std::ostringstream& examples_out) {
  SetReport r;
  const size_t n = set.count;
  std::vector<std::map<std::string, std::vector<double>>> scores(arms.size());
  for (size_t a = 0; a < arms.size(); ++a) {
    for (size_t i = set.first; i < set.first + n; ++i) {
      const Example& ex = examples[i];
      const Answer& ans = got[a][i];
      const std::string& reference = ex.reference_from_first_arm ? got[0][i].text : ex.reference;
      const auto sc = scorer.score(ans.text, reference);
      for (const auto& m : metrics) scores[a][m].push_back(sc.at(m));
      json prompt = json::array();
      for (const auto& m : ex.prompt) prompt.push_back({{"role", m.role}, {"content", m.content}});
      examples_out << json{{"set", set.kind}, {"arm", arms[a].name}, {"line", ex.line}, {"prompt", prompt},
                           {"reference", reference}, {"reference_from_first_arm", ex.reference_from_first_arm},
                           {"answer", ans.text}, {"stopped", ans.stopped ? "end" : "length"}, {"scores", sc},
                           {"prompt_tokens", ans.prompt_tokens}, {"answer_tokens", ans.answer_tokens},
                           {"latency_s", ans.latency_s}}
                          .dump(-1, ' ', false, json::error_handler_t::replace)
                   << "\n";
    }
  }
  std::ostringstream table, md, dat;
  char buf[512];
  int name_width = 10;
  for (const auto& arm : arms) name_width = std::max(name_width, static_cast<int>(arm.name.size()));
  std::snprintf(buf, sizeof(buf), "%-*s %-26s %-26s %9s %9s %9s\n", name_width, "arm", (set.metric + " [95% CI]").c_str(),
                "vs first arm [95% CI]", "prompt tk", "answer tk", "latency s");
  table << buf;
  md << "| arm | " << set.metric << " | vs first arm | prompt tokens | answer tokens | latency s |";
  for (const auto& m : metrics) {
    if (m != set.metric) md << " " << m << " |";
  }
  md << "\n|---|---|---|---|---|---|";
  for (const auto& m : metrics) {
    if (m != set.metric) md << "---|";
  }
  md << "\n";
  for (size_t a = 0; a < arms.size(); ++a) {
    double pt = 0, at = 0, lat = 0;
    for (size_t i = set.first; i < set.first + n; ++i) {
      pt += static_cast<double>(got[a][i].prompt_tokens);
      at += static_cast<double>(got[a][i].answer_tokens);
      lat += got[a][i].latency_s;
    }
    pt /= static_cast<double>(n);
    at /= static_cast<double>(n);
    lat /= static_cast<double>(n);
    json arm = {{"prompt_tokens", pt}, {"answer_tokens", at}, {"latency_s", lat}, {"metrics", json::object()}};
    for (const auto& m : metrics) {
      const Interval ci = bootstrap_mean(scores[a][m]);
      arm["metrics"][m] = {{"mean", ci.mean}, {"low", ci.low}, {"high", ci.high}};
    }
    const Interval main = bootstrap_mean(scores[a][set.metric]);
    const Interval diff = bootstrap_difference(scores[0][set.metric], scores[a][set.metric]);
    if (a > 0) arm["difference"] = {{"mean", diff.mean}, {"low", diff.low}, {"high", diff.high}};
    r.last_diff = diff;
    r.arms.push_back(arm);
    std::snprintf(buf, sizeof(buf), "%.3f [%.3f, %.3f]", main.mean, main.low, main.high);
    const std::string sc = buf;
    std::snprintf(buf, sizeof(buf), "%+.3f [%+.3f, %+.3f]", diff.mean, diff.low, diff.high);
    const std::string df = a == 0 ? "-" : buf;
    std::snprintf(buf, sizeof(buf), "%-*s %-26s %-26s %9.1f %9.1f %9.3f\n", name_width, arms[a].name.c_str(), sc.c_str(),
                  df.c_str(), pt, at, lat);
    table << buf;
    md << "| " << arms[a].name << " | " << sc << " | " << df << " | " << pt << " | " << at << " | " << lat << " |";
    for (const auto& m : metrics) {
      if (m == set.metric) continue;
      std::snprintf(buf, sizeof(buf), " %.3f |", arm["metrics"][m]["mean"].get<double>());
      md << buf;
    }
    md << "\n";
    std::string label = arms[a].name;  // a double-quoted field of gnuplot's data file
    std::replace(label.begin(), label.end(), '"', '\'');
    dat << a << " \"" << label << "\" " << main.mean << " " << main.low << " " << main.high << " " << pt << "\n";
  }
  r.table = table.str();
  r.md = md.str();
  r.dat = dat.str();
  return r;
}

// What a set's references are, in words.
std::string references_of(const EvalSet& set, const std::vector<Example>& examples) {
  size_t from_first = 0;
  for (size_t i = set.first; i < set.first + set.count; ++i) from_first += examples[i].reference_from_first_arm ? 1 : 0;
  if (from_first == set.count) return "compared with the first arm's answers";
  if (from_first == 0) return "scored against the file's answers";
  return str_cat(from_first, " compared with the first arm's answers, ", set.count - from_first,
                 " scored against the file's answers");
}

}  // namespace

int run_judge(const JudgeOptions& o, DistContext& dist) {
  const auto& names = text_metric_names();
  for (const auto& [flag, metric] : {std::pair{"--metric", o.metric}, std::pair{"--general-metric", o.general_metric}}) {
    if (std::find(names.begin(), names.end(), metric) == names.end() || (metric == "regex" && o.regex.empty())) {
      throw InputError(str_cat("eval --generate: ", flag, " '", metric, "' is not one of ", join(names, ", "),
                               " (regex needs --regex)"));
    }
  }
  if (o.models.empty()) throw InputError("eval --generate needs at least one --model");
  if (o.few_shot > 0 && o.few_shot_from.empty()) throw InputError("eval --generate: --few-shot needs --few-shot-from FILE");
  if (o.few_shot == 0 && !o.few_shot_from.empty()) {
    throw InputError("eval --generate: --few-shot-from has no effect without --few-shot K");
  }
  const TextScorer scorer(o.regex);
  // The examples: the task's, then the general prompts', one list.
  std::vector<Example> examples = read_examples(o.heldout, o.limit);
  std::vector<EvalSet> sets = {{"task", o.heldout, o.metric, 0, examples.size()}};
  if (!o.general.empty()) {
    std::vector<Example> general = read_examples(o.general, o.limit);
    sets.push_back({"general", o.general, o.general_metric, examples.size(), general.size()});
    for (auto& ex : general) examples.push_back(std::move(ex));
  }
  // The shots: K whole conversations without their system messages, by seed.
  std::vector<std::vector<ChatMessage>> shots;
  if (o.few_shot > 0) {
    auto pool = read_chat_file(o.few_shot_from);
    if (o.few_shot > static_cast<int64_t>(pool.size())) {
      throw InputError(str_cat(o.few_shot_from, ": --few-shot ", o.few_shot, " is more than its ", pool.size(),
                               " conversations"));
    }
    std::mt19937_64 rng(o.shot_seed);
    for (size_t i = pool.size() - 1; i > 0; --i) std::swap(pool[i], pool[std::uniform_int_distribution<size_t>(0, i)(rng)]);
    for (int64_t k = 0; k < o.few_shot; ++k) {
      std::vector<ChatMessage> turns;
      for (const auto& m : pool[static_cast<size_t>(k)].second) {
        if (m.role != "system") turns.push_back(m);
      }
      shots.push_back(std::move(turns));
    }
  }
  std::vector<Arm> arms;
  for (size_t i = 0; i < o.models.size(); ++i) {
    const std::string base = fs::path(o.models[i]).filename().string();
    arms.push_back({str_cat(base, " zero-shot"), o.models[i], 0});
    if (i == 0 && o.few_shot > 0) arms.push_back({str_cat(base, " ", o.few_shot, "-shot"), o.models[i], o.few_shot});
  }
  for (size_t i = 0; i < arms.size(); ++i) {  // a model given twice: arms 2, 3, ... of that name get a number
    int same = 1;
    for (size_t k = 0; k < i; ++k) same += arms[k].name.rfind(arms[i].name, 0) == 0 ? 1 : 0;
    if (same > 1) arms[i].name += str_cat(" (", same, ")");
  }
  const fs::path out_dir = o.output_dir;
  // The ranks' answers meet in a folder every rank can name; it must be new,
  // as it is deleted at the end.
  const fs::path parts = out_dir / ".parts";
  if (fs::exists(fs::symlink_status(parts))) {
    throw InputError(str_cat(parts.string(), ": exists already (left by an interrupted eval --generate?); remove it or "
                             "give another --output"));
  }
  dist.barrier();  // every rank has looked before rank 0 makes it
  const bool made_out_dir = !fs::exists(out_dir);
  if (dist.rank() == 0) {
    fs::create_directories(out_dir);
    if (::mkdir(parts.c_str(), 0755) != 0) throw Error(str_cat(parts.string(), ": cannot create"));
  }
  dist.barrier();
  // A failure before the report (a model refused, a bad example) leaves
  // nothing of this run behind.
  auto remove_made = [&] {
    if (dist.rank() != 0) return;
    std::error_code ec;
    fs::remove_all(made_out_dir ? out_dir : parts, ec);
  };
  std::vector<std::vector<Answer>> got(arms.size(), std::vector<Answer>(examples.size()));
  try {
    for (size_t a = 0; a < arms.size(); ++a) {
      const auto answers = run_arm(o, arms[a], examples, shots, dist);
      std::ostringstream s;
      for (const auto& [i, ans] : answers) {
        s << json{{"i", i}, {"answer", ans.text}, {"prompt_tokens", ans.prompt_tokens}, {"answer_tokens", ans.answer_tokens},
                  {"latency_s", ans.latency_s}, {"stopped", ans.stopped}}
                 .dump(-1, ' ', false, json::error_handler_t::replace)
          << "\n";
      }
      write_file_atomically((parts / str_cat("arm", a, "-rank", dist.rank(), ".jsonl")).string(), s.str());
    }
    dist.barrier();
    if (dist.rank() != 0) return 0;

    // Rank 0: gather, score, report.
    for (size_t a = 0; a < arms.size(); ++a) {
      for (int r = 0; r < dist.world_size(); ++r) {
        std::ifstream in(parts / str_cat("arm", a, "-rank", r, ".jsonl"));
        for (std::string line; std::getline(in, line);) {
          const json j = json::parse(line);
          Answer& ans = got[a][j["i"].get<size_t>()];
          ans.text = j["answer"].get<std::string>();
          ans.prompt_tokens = j["prompt_tokens"];
          ans.answer_tokens = j["answer_tokens"];
          ans.latency_s = j["latency_s"];
          ans.stopped = j["stopped"];
        }
      }
    }
  } catch (...) {
    remove_made();
    throw;
  }
  fs::remove_all(parts);
  std::vector<std::string> metrics;
  for (const auto& m : names) {
    if (m != "regex" || scorer.has_regex()) metrics.push_back(m);
  }
  std::ostringstream examples_out, md;
  std::vector<SetReport> reports;
  for (const auto& set : sets) reports.push_back(score_set(set, examples, arms, got, metrics, scorer, examples_out));
  // summary.json: the task's scores per arm, and each arm's general scores beside them.
  json summary = {{"heldout", o.heldout}, {"examples", sets[0].count}, {"metric", o.metric}, {"arms", json::array()}};
  for (size_t a = 0; a < arms.size(); ++a) {
    json arm = {{"name", arms[a].name}, {"model", arms[a].model}, {"shots", arms[a].shots}};
    arm.update(reports[0].arms[a]);
    if (sets.size() > 1) arm["general"] = reports[1].arms[a];
    summary["arms"].push_back(arm);
  }
  if (sets.size() > 1) {
    summary["general"] = {{"file", o.general}, {"examples", sets[1].count}, {"metric", o.general_metric},
                          {"references", references_of(sets[1], examples)}};
  }
  const bool better = arms.size() > 1 && reports[0].last_diff.low > 0;
  summary["last_beats_first"] = better;
  md << "# eval --generate: " << o.heldout << "\n\n";
  for (size_t k = 0; k < sets.size(); ++k) {
    const std::string title = str_cat(sets[k].kind, ": ", sets[k].file, " (",
                                      sets[k].count, " examples, ", references_of(sets[k], examples), ")");
    if (sets.size() > 1) {
      std::printf("%s%s\n", k > 0 ? "\n" : "", title.c_str());
      md << "## " << title << "\n\n";
    } else {
      md << sets[k].count << " examples, " << references_of(sets[k], examples) << ".\n\n";
    }
    md << "Main metric `" << sets[k].metric << "` (mean, 95% bootstrap interval).\n\n" << reports[k].md << "\n";
    std::printf("%s", reports[k].table.c_str());
  }
  write_file_atomically((out_dir / "examples.jsonl").string(), examples_out.str());
  write_file_atomically((out_dir / "summary.json").string(), summary.dump(1) + "\n");
  write_file_atomically((out_dir / "report.md").string(), md.str());
  // The chart: each set's main metric with its interval, and the prompt tokens, per arm.
  std::string chart = "no chart (gnuplot is not installed)";
  {
    // Every file but the picture under a temporary name of its own.
    const fs::path png = out_dir / "chart.png";
    std::vector<fs::path> dats;
    for (const auto& r : reports) dats.push_back(write_temp_file((out_dir / "chart.dat").string(), r.dat));
    const std::string png_tmp = create_temp_file(png.string());
    std::ostringstream gp;
    gp << "set terminal png size " << 550 * (sets.size() + 1) << ",520 noenhanced\nset output " << gnuplot_quote(png_tmp)
       << "\nset multiplot layout 1," << sets.size() + 1 << "\n"
       << "set style fill solid 0.6\nset boxwidth 0.6\nset xtics rotate by -15 font ',9'\nset bmargin 6\nset xrange [-0.6:"
       << arms.size() - 0.4 << "]\n";
    for (size_t k = 0; k < sets.size(); ++k) {
      gp << "set yrange [0:1.05]\nset title "
         << gnuplot_quote(str_cat(sets.size() > 1 ? sets[k].kind + ": " : "", sets[k].metric, " (95% interval), ",
                                  sets[k].count, " examples"))
         << "\nplot " << gnuplot_quote(dats[k].string())
         << " using 1:3:xtic(2) with boxes notitle, '' using 1:3:4:5 with yerrorbars notitle lc rgb 'black'\n";
    }
    gp << "set yrange [0:*]\nset title 'mean prompt tokens per request'\n"
       << "plot " << gnuplot_quote(dats[0].string()) << " using 1:6:xtic(2) with boxes notitle lc rgb '#cc6600'\nunset multiplot\n";
    const fs::path g = write_temp_file((out_dir / "chart.gp").string(), gp.str());
    if (run_gnuplot(g.string())) {
      fs::rename(png_tmp, png);
      chart = png.string();
    } else {
      fs::remove(png_tmp);
    }
    for (const auto& d : dats) fs::remove(d);
    fs::remove(g);
  }
  std::printf("written: %s/{examples.jsonl,summary.json,report.md}, %s\n", out_dir.c_str(), chart.c_str());
  if (o.require_better && !better) {
    const Interval& d = reports[0].last_diff;
    std::printf("--require-better: the last arm (%s) does not beat the first (%s): difference %+.3f [%+.3f, %+.3f]\n",
                arms.back().name.c_str(), arms.front().name.c_str(), d.mean, d.low, d.high);
    return 1;
  }
  return 0;
}

}  // namespace shardtune
