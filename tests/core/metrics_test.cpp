#include "shardtune/metrics/metrics.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace shardtune {
namespace {

TEST(Metrics, PeakFlopsFromTheDeviceName) {
  EXPECT_DOUBLE_EQ(peak_flops_for_device("NVIDIA H100 80GB HBM3", true), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_flops_for_device("NVIDIA H100 PCIe", true), 756.5e12);
  EXPECT_DOUBLE_EQ(peak_flops_for_device("NVIDIA H200", true), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_flops_for_device("NVIDIA A100-SXM4-80GB", false), 19.5e12);
  EXPECT_EQ(peak_flops_for_device("cpu", true), 0.0);
}

TEST(Metrics, Mfu) {
  // 6 * 124M FLOPs per token at 1M tokens/s on 8 devices of 989.4 TFLOP/s.
  EXPECT_NEAR(mfu(6 * 124e6, 1e6, 8, 989.4e12), 6 * 124e6 * 1e6 / (8 * 989.4e12), 1e-12);
  EXPECT_EQ(mfu(1e9, 1e3, 1, 0.0), 0.0);  // unknown peak
}

TEST(Metrics, FileAppendsWholeLines) {
  const std::string path = testing::TempDir() + "/metrics_test/m.jsonl";
  std::remove(path.c_str());
  {
    MetricsFile f(path, /*append=*/false);
    f.write("{\"step\":1}");
  }
  {
    MetricsFile f(path, /*append=*/true);
    f.write("{\"step\":2}");
  }
  std::ifstream in(path);
  std::string a, b, c;
  std::getline(in, a);
  std::getline(in, b);
  EXPECT_EQ(a, "{\"step\":1}");
  EXPECT_EQ(b, "{\"step\":2}");
  EXPECT_FALSE(std::getline(in, c));
  MetricsFile truncate(path, /*append=*/false);
  EXPECT_EQ(std::ifstream(path).peek(), std::char_traits<char>::eof());
}

TEST(Metrics, Durations) {
  EXPECT_EQ(format_duration(0), "00:00");
  EXPECT_EQ(format_duration(125.4), "02:05");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "--:--");
}

}  // namespace
}  // namespace shardtune
