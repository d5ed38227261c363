#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "shardtune/config/config.h"
#include "shardtune/core/error.h"

namespace shardtune {
namespace {

// The message of the InputError that loading `yaml` with `overrides` throws.
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(yaml, "configs/x.yaml", overrides);
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no InputError for:\n" << yaml;
  return "";
}

TEST(Config, DefaultsWhenEmpty) {
  const Config c = parse_config("", "empty.yaml");
  EXPECT_EQ(c.comm.backend, "auto");
  EXPECT_DOUBLE_EQ(c.comm.timeout_s, 600.0);
  EXPECT_FALSE(c.comm.check_collectives);
  EXPECT_EQ(c.dist.intra_op_threads, 0);
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.other_ranks_level, "warn");
}

TEST(Config, ReadsEveryKind) {
  const Config c = parse_config(R"(
dist:
  intra_op_threads: 3
comm:
  backend: mpi
  timeout_s: 1.5e1
  check_collectives: true
log:
  level: debug
)",
                                "ok.yaml");
  EXPECT_EQ(c.dist.intra_op_threads, 3);
  EXPECT_EQ(c.comm.backend, "mpi");
  EXPECT_DOUBLE_EQ(c.comm.timeout_s, 15.0);
  EXPECT_TRUE(c.comm.check_collectives);
  EXPECT_EQ(c.log.level, "debug");
}

TEST(Config, OverridesApplyInOrderAndCreateSections) {
  const Config c = parse_config("comm:\n  timeout_s: 5\n", "x.yaml",
                                {"comm.timeout_s=7", "log.level=error", "comm.timeout_s=9"});
  EXPECT_DOUBLE_EQ(c.comm.timeout_s, 9.0);
  EXPECT_EQ(c.log.level, "error");
}

TEST(Config, PrintedYamlLoadsBackToTheSameConfig) {
  const Config a = parse_config("comm:\n  timeout_s: 42.5\n  check_collectives: true\n", "x.yaml",
                                {"dist.intra_op_threads=2", "log.other_ranks_level=off"});
  const std::string text = to_yaml(a);
  const Config b = parse_config(text, "printed.yaml");
  EXPECT_EQ(to_yaml(b), text);
  EXPECT_DOUBLE_EQ(b.comm.timeout_s, 42.5);
  EXPECT_TRUE(b.comm.check_collectives);
  EXPECT_EQ(b.dist.intra_op_threads, 2);
  EXPECT_EQ(b.log.other_ranks_level, "off");
  EXPECT_NE(text.find("# a collective not finished"), std::string::npos) << text;
}

TEST(Config, LoadsAFile) {
  const std::string path = ::testing::TempDir() + "/shardtune_config_test.yaml";
  std::ofstream(path) << "comm:\n  timeout_s: 3\n";
  EXPECT_DOUBLE_EQ(load_config(path).comm.timeout_s, 3.0);
  std::remove(path.c_str());
}

// --- bad input: every case names where, the key path and what was expected ---

TEST(ConfigErrors, NotANumber) {
  EXPECT_EQ(error_of("comm:\n  timeout_s: fast\n"),
            "configs/x.yaml:2: comm.timeout_s: expected a positive number, got \"fast\"");
}

TEST(ConfigErrors, NotPositive) {
  EXPECT_EQ(error_of("comm:\n  timeout_s: -1\n"),
            "configs/x.yaml:2: comm.timeout_s: expected a positive number, got \"-1\"");
}

TEST(ConfigErrors, NotAnInteger) {
  EXPECT_EQ(error_of("dist:\n  intra_op_threads: 2.5\n"),
            "configs/x.yaml:2: dist.intra_op_threads: expected a non-negative integer, got \"2.5\"");
}

TEST(ConfigErrors, NegativeInteger) {
  EXPECT_EQ(error_of("dist:\n  intra_op_threads: -3\n"),
            "configs/x.yaml:2: dist.intra_op_threads: expected a non-negative integer, got \"-3\"");
}

TEST(ConfigErrors, IntegerOutOfRange) {
  EXPECT_NE(error_of("dist:\n  intra_op_threads: 99999999999999999999999\n")
                .find("expected a non-negative integer"),
            std::string::npos);
}

TEST(ConfigErrors, NotABoolean) {
  EXPECT_EQ(error_of("comm:\n  check_collectives: maybe\n"),
            "configs/x.yaml:2: comm.check_collectives: expected a boolean (true or false), got "
            "\"maybe\"");
}

TEST(ConfigErrors, NotOneOfTheChoices) {
  EXPECT_EQ(error_of("comm:\n  backend: gloo\n"),
            "configs/x.yaml:2: comm.backend: expected one of auto, mpi, nccl, got \"gloo\"");
}

TEST(ConfigErrors, ListWhereAScalarBelongs) {
  EXPECT_EQ(error_of("comm:\n  timeout_s: [1, 2]\n"),
            "configs/x.yaml:2: comm.timeout_s: expected a positive number, got a list");
}

TEST(ConfigErrors, UnknownKeyWithSuggestion) {
  const std::string e = error_of("comm:\n  timeout: 5\n");
  EXPECT_EQ(e.rfind("configs/x.yaml:2: comm.timeout: unknown key (did you mean 'comm.timeout_s'?)",
                    0),
            0u)
      << e;
  EXPECT_NE(e.find("known keys here: backend, timeout_s, check_collectives"), std::string::npos);
}

TEST(ConfigErrors, UnknownSectionWithSuggestion) {
  EXPECT_EQ(error_of("\nlogg:\n  level: info\n").rfind(
                "configs/x.yaml:2: logg: unknown key (did you mean 'log'?)", 0),
            0u);
}

TEST(ConfigErrors, UnknownKeyWithoutPlausibleSuggestion) {
  const std::string e = error_of("comm:\n  zzzzzzzz: 1\n");
  EXPECT_NE(e.find("comm.zzzzzzzz: unknown key; known keys here"), std::string::npos) << e;
}

TEST(ConfigErrors, SectionIsNotAMapping) {
  EXPECT_EQ(error_of("comm: 5\n"),
            "configs/x.yaml:1: comm: expected a mapping of keys, got \"5\"");
}

TEST(ConfigErrors, TopLevelIsNotAMapping) {
  EXPECT_NE(error_of("- a\n- b\n").find("expected a mapping of sections at the top level"),
            std::string::npos);
}

TEST(ConfigErrors, MalformedYamlNamesLineAndColumn) {
  const std::string e = error_of("comm:\n  timeout_s: [1, 2\n");
  EXPECT_EQ(e.rfind("configs/x.yaml:", 0), 0u) << e;
  EXPECT_NE(e.find("invalid YAML"), std::string::npos) << e;
}

TEST(ConfigErrors, MissingFile) {
  try {
    load_config("/nonexistent/dir/cfg.yaml");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              "/nonexistent/dir/cfg.yaml: cannot open config file: No such file or directory");
  }
}

TEST(ConfigErrors, OverrideWithABadValueNamesTheOverride) {
  EXPECT_EQ(error_of("", {"comm.timeout_s=fast"}),
            "override 'comm.timeout_s=fast': comm.timeout_s: expected a positive number, got "
            "\"fast\"");
}

TEST(ConfigErrors, OverrideOfAnUnknownKey) {
  EXPECT_EQ(error_of("", {"comm.timout_s=3"}).rfind(
                "override 'comm.timout_s=3': comm.timout_s: unknown key (did you mean "
                "'comm.timeout_s'?)",
                0),
            0u);
}

TEST(ConfigErrors, OverrideWithoutEquals) {
  EXPECT_EQ(error_of("", {"comm.timeout_s"}),
            "override 'comm.timeout_s': expected key.path=value");
}

TEST(ConfigErrors, OverrideWithABadPath) {
  EXPECT_EQ(error_of("", {"comm..timeout_s=3"}),
            "override 'comm..timeout_s=3': 'comm..timeout_s' is not a key path (expected names "
            "joined by '.')");
}

TEST(ConfigErrors, OverrideBelowAScalar) {
  EXPECT_EQ(error_of("", {"comm.timeout_s.x=3"}),
            "override 'comm.timeout_s.x=3': comm.timeout_s: expected a positive number, got a "
            "mapping");
  EXPECT_EQ(error_of("comm:\n  timeout_s: 5\n", {"comm.timeout_s.x=3"}),
            "override 'comm.timeout_s.x=3': comm.timeout_s is not a section");
}

TEST(ConfigErrors, OverrideWithInvalidYamlValue) {
  EXPECT_NE(error_of("", {"comm.timeout_s=[1"}).find("the value is not valid YAML"),
            std::string::npos);
}

TEST(Config, ListsOfStrings) {
  Config c = parse_config("data:\n  train: [a-*.h5, b.h5]\n  val: v.h5\n", "t.yaml");
  EXPECT_EQ(c.data.train, (std::vector<std::string>{"a-*.h5", "b.h5"}));
  EXPECT_EQ(c.data.val, (std::vector<std::string>{"v.h5"}));
  c = parse_config("", "t.yaml", {"model.lora.targets=[q_proj, v_proj]"});
  EXPECT_EQ(c.model.lora.targets, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(error_of("data:\n  train: {a: 1}\n"), "configs/x.yaml:2: data.train: expected a list of strings, got a mapping");
  // The printed config reads back as the same lists.
  const Config again = parse_config(to_yaml(c), "printed");
  EXPECT_EQ(again.model.lora.targets, c.model.lora.targets);
  EXPECT_TRUE(again.data.train.empty());
  EXPECT_EQ(again.model.init, "");
}

TEST(ConfigErrors, ValueOutOfRange) {
  EXPECT_EQ(error_of("parallel:\n  zero_stage: 4\n"),
            "configs/x.yaml:2: parallel.zero_stage: expected an integer from 0 to 3, got \"4\"");
}

TEST(Config, ActivationCheckpointingResolvesPerStage) {
  EXPECT_EQ(checkpoint_every(default_config()), 0);
  EXPECT_EQ(checkpoint_every(default_config({"parallel.zero_stage=3"})), 1);  // auto: it recomputes anyway
  EXPECT_EQ(checkpoint_every(default_config({"train.activation_checkpointing=blocks"})), 1);
  EXPECT_EQ(checkpoint_every(default_config({"train.activation_checkpointing=blocks", "train.checkpoint_every=3",
                                             "parallel.zero_stage=2"})),
            3);
  EXPECT_EQ(checkpoint_every(default_config({"train.checkpoint_every=3"})), 0);  // auto at stage 2: none
}

TEST(ConfigErrors, WhatZeroThreeCannotDoIsNamedWhereItWasSet) {
  EXPECT_EQ(error_of("parallel:\n  zero_stage: 3\ntrain:\n  activation_checkpointing: none\n"),
            "configs/x.yaml:4: train.activation_checkpointing: none is not available at parallel.zero_stage 3, "
            "which recomputes every block (it frees each block's parameters after its forward)");
  EXPECT_EQ(error_of("parallel:\n  zero_stage: 3\n", {"train.checkpoint_every=2"}),
            "override 'train.checkpoint_every=2': train.checkpoint_every: 2 is not available at "
            "parallel.zero_stage 3, which recomputes every block");
  EXPECT_EQ(error_of("train:\n  activation_checkpointing: some\n"),
            "configs/x.yaml:2: train.activation_checkpointing: expected one of auto, none, blocks, got \"some\"");
  EXPECT_EQ(error_of("train:\n  checkpoint_every: 0\n"),
            "configs/x.yaml:2: train.checkpoint_every: expected a positive integer, got \"0\"");
}

TEST(Config, IsOverride) {
  EXPECT_TRUE(is_override("a.b=1"));
  EXPECT_FALSE(is_override("configs/x.yaml"));
  EXPECT_FALSE(is_override("--flag=1"));
}

}  // namespace
}  // namespace shardtune
