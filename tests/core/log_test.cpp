#include <gtest/gtest.h>

#include "shardtune/metrics/log.h"

namespace shardtune {
namespace {

TEST(Log, RankZeroAndOtherRanksHaveTheirOwnLevels) {
  LogConfig config;  // info on rank 0, warn elsewhere
  log::init(0, config);
  EXPECT_TRUE(log::enabled(log::Level::kInfo));
  EXPECT_FALSE(log::enabled(log::Level::kDebug));
  log::init(3, config);
  EXPECT_FALSE(log::enabled(log::Level::kInfo));
  EXPECT_TRUE(log::enabled(log::Level::kWarn));
  config.other_ranks_level = "debug";
  log::init(3, config);
  EXPECT_TRUE(log::enabled(log::Level::kDebug));
}

TEST(Log, WritesWithTheRankPrefix) {
  log::init(2, LogConfig{});
  ::testing::internal::CaptureStderr();
  log::warn("bucket ", 7, " is late");
  log::info("not shown on rank 2");
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("[rank 2] [warning] bucket 7 is late"), std::string::npos) << out;
  EXPECT_EQ(out.find("not shown"), std::string::npos) << out;
}

TEST(Log, RejectsUnknownLevel) {
  EXPECT_THROW(log::parse_level("verbose"), InputError);
  EXPECT_EQ(log::parse_level("error"), log::Level::kError);
}

}  // namespace
}  // namespace shardtune
