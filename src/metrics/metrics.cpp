#include "shardtune/metrics/metrics.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "shardtune/core/error.h"

namespace shardtune {

double peak_flops_for_device(const std::string& name, bool bf16) {
  // Dense (no sparsity) peaks from the vendors' data sheets, SXM parts where
  // there are several forms; fp32 is plain (non-tensor-core) fp32.
  struct Entry {
    const char* key;
    double bf16, fp32;
  };
  static const Entry kTable[] = {
      {"H200", 989.4e12, 66.9e12},  {"H100 PCIe", 756.5e12, 51.2e12}, {"H100", 989.4e12, 66.9e12},
      {"GH200", 989.4e12, 66.9e12}, {"B200", 2250e12, 80e12},          {"A100", 312e12, 19.5e12},
      {"L40S", 362.1e12, 91.6e12},  {"A10G", 70e12, 31.2e12},          {"V100", 0, 15.7e12},
  };
  for (const auto& e : kTable) {
    if (name.find(e.key) != std::string::npos) return bf16 ? e.bf16 : e.fp32;
  }
  return 0.0;
}

double mfu(double flops_per_token, double tokens_per_second, int devices, double peak) {
  if (peak <= 0.0 || devices <= 0) return 0.0;
  return flops_per_token * tokens_per_second / (peak * devices);
}

MetricsFile::MetricsFile(const std::string& path, bool append) : path_(path) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (file_ == nullptr) throw Error(str_cat(path, ": cannot open the metrics file: ", std::strerror(errno)));
}

MetricsFile::~MetricsFile() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsFile::write(const std::string& record) {
  if (std::fprintf(file_, "%s\n", record.c_str()) < 0 || std::fflush(file_) != 0) {
    throw Error(str_cat(path_, ": cannot write the metrics file: ", std::strerror(errno)));
  }
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0.0) || seconds > 1e8) return "--:--";
  const auto s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%02ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

void ProgressBar::update(int64_t done, const std::string& text, double eta_seconds) {
  if (!enabled_) return;
  constexpr int kWidth = 24;
  const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r\033[K[%s] %lld/%lld %s eta %s", bar.c_str(), static_cast<long long>(done),
               static_cast<long long>(total_), text.c_str(), format_duration(eta_seconds).c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (enabled_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace shardtune
