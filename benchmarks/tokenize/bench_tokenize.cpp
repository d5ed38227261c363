// Tokenizer encode speed, one thread: the documents of a JSONL file
// ({"text": ...} per line) encoded ROUNDS times; prints one JSON line with
// the first round's seconds (a fresh tokenizer: caches empty), the best
// round's, the tokens and bytes, and a hash of the ids (so a peer's run on
// the same documents can be checked for the same output).
//
//   shardtune_bench_tokenize --tokenizer SPEC --input DOCS.jsonl [--rounds 3]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shardtune/core/error.h"
#include "shardtune/tokenize/tokenizer.h"

int main(int argc, char** argv) {
  std::string spec, input;
  int rounds = 3;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 == argc) {
      std::fprintf(stderr, "bench_tokenize: %s needs a value\n", flag.c_str());
      return 2;
    }
    if (flag == "--tokenizer") {
      spec = argv[i + 1];
    } else if (flag == "--input") {
      input = argv[i + 1];
    } else if (flag == "--rounds") {
      char* end = nullptr;
      const long n = std::strtol(argv[i + 1], &end, 10);
      rounds = *end == '\0' && n >= 1 && n <= 1000 ? static_cast<int>(n) : 0;
    } else {
      std::fprintf(stderr, "bench_tokenize: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (spec.empty() || input.empty() || rounds < 1) {
    std::fprintf(stderr, "usage: shardtune_bench_tokenize --tokenizer SPEC --input DOCS.jsonl [--rounds 1..1000]\n");
    return 2;
  }
  try {
    const auto tok = shardtune::load_tokenizer(spec);
    std::vector<std::string> docs;
    std::ifstream in(input);
    if (!in) throw shardtune::InputError(input + ": cannot open");
    uint64_t bytes = 0;
    for (std::string line; std::getline(in, line);) {
      docs.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
      bytes += docs.back().size();
    }
    double best = 1e300, first = 0;
    uint64_t tokens = 0, hash = 0;
    for (int r = 0; r < rounds; ++r) {
      tokens = 0;
      hash = 1469598103934665603ull;  // FNV-1a over the ids
      const auto t0 = std::chrono::steady_clock::now();
      for (const auto& d : docs) {
        const auto ids = tok->encode(d, /*parse_special=*/false);
        tokens += ids.size();
        for (int32_t id : ids) hash = (hash ^ static_cast<uint32_t>(id)) * 1099511628211ull;
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r == 0) first = seconds;
      best = std::min(best, seconds);
    }
    std::printf("{\"first_seconds\": %.6f, \"seconds\": %.6f, \"tokens\": %llu, \"bytes\": %llu, \"docs\": %zu, \"ids_hash\": \"%016llx\"}\n",
                first, best, static_cast<unsigned long long>(tokens), static_cast<unsigned long long>(bytes), docs.size(),
                static_cast<unsigned long long>(hash));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenize: %s\n", e.what());
    return 2;
  }
  return 0;
}
