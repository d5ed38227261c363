// Typed configuration: one small struct per module, loaded from YAML once.
//
// Each struct lists its fields in visit(); the loader, the validator, the
// `key=value` override parser and the YAML printer are all driven by that one
// list, so a field is declared in exactly one place. This header does not
// include yaml-cpp: modules read their struct without paying for the parser.
//
// Errors (all shardtune::InputError) name where the bad value came from (the
// file and line, or the command-line override), the key path and what was
// expected, e.g.
//   configs/x.yaml:4: comm.timeout_s: expected a positive number, got "fast"
// Unknown keys are rejected with a did-you-mean suggestion.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shardtune {

// Rules a field's value must satisfy.
struct AnyValue {};
struct Positive {};     // > 0
struct NonNegative {};  // >= 0
struct OneOf {          // a string from a fixed set
  std::vector<std::string> choices;
};

// dist: how ranks map onto the node.
struct DistConfig {
  int64_t intra_op_threads = 0;

  template <class V>
  void visit(V& v) {
    v.field("intra_op_threads", intra_op_threads, NonNegative{},
            "torch intra-op threads per rank; 0 = cores on the node / ranks on the node");
  }
};

// comm: the collective backend.
struct CommConfig {
  std::string backend = "auto";
  double timeout_s = 600.0;
  bool check_collectives = false;

  template <class V>
  void visit(V& v) {
    v.field("backend", backend, OneOf{{"auto", "mpi", "nccl"}},
            "collective backend: mpi (CPU tensors), nccl (CUDA tensors), auto = mpi");
    v.field("timeout_s", timeout_s, Positive{},
            "a collective not finished after this many seconds fails every rank");
    v.field("check_collectives", check_collectives, AnyValue{},
            "ranks compare (op, dtype, count, sequence) before each collective");
  }
};

// log: the rank-aware logger.
struct LogConfig {
  std::string level = "info";
  std::string other_ranks_level = "warn";

  template <class V>
  void visit(V& v) {
    static const OneOf kLevels{{"trace", "debug", "info", "warn", "error", "off"}};
    v.field("level", level, kLevels, "log level of rank 0");
    v.field("other_ranks_level", other_ranks_level, kLevels, "log level of ranks other than 0");
  }
};

struct Config {
  DistConfig dist;
  CommConfig comm;
  LogConfig log;

  template <class V>
  void visit(V& v) {
    v.section("dist", dist);
    v.section("comm", comm);
    v.section("log", log);
  }
};

// Reads the YAML file at path, applies the overrides in order and validates
// the result. Throws InputError on any problem.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// As load_config, from text; source_name stands for the file in messages.
Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides = {});

// The defaults with the overrides applied (no file).
Config default_config(const std::vector<std::string>& overrides = {});

// The resolved config as YAML, every field present, with its help as a comment.
std::string to_yaml(const Config& config);

// True for a command-line argument of the form key.path=value.
bool is_override(std::string_view arg);

}  // namespace shardtune
