// Helper for tests/judge/metrics_parity.py: shardtune's text metrics.
//
//   judge_tool score PAIRS.json OUT.json         [[answer, reference], ...] -> [{metric: score}, ...]
//   judge_tool bootstrap VALUES.json OUT.json    [x, ...] -> {"mean", "low", "high"}
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "shardtune/judge/text_metrics.h"

using namespace shardtune;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: judge_tool score|bootstrap IN.json OUT.json\n");
    return 2;
  }
  const std::string cmd = argv[1];
  std::ifstream in(argv[2]);
  const nlohmann::json j = nlohmann::json::parse(in);
  nlohmann::json out;
  if (cmd == "score") {
    const TextScorer scorer("[0-9]{3}");
    out = nlohmann::json::array();
    for (const auto& p : j) out.push_back(scorer.score(p[0].get<std::string>(), p[1].get<std::string>()));
  } else {
    const Interval ci = bootstrap_mean(j.get<std::vector<double>>());
    out = {{"mean", ci.mean}, {"low", ci.low}, {"high", ci.high}};
  }
  std::ofstream(argv[3]) << out.dump() << "\n";
  return 0;
}
