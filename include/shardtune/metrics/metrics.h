// Training metrics: the JSONL record file, model FLOP utilisation, and the
// progress bar. torch-free.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace shardtune {

// Peak dense FLOP/s of one GPU, from its name as CUDA reports it ("NVIDIA
// H100 80GB HBM3"), for bf16 tensor-core math or plain fp32; 0 when the
// device is not in the table (CPUs included: there MFU needs log.peak_tflops).
double peak_flops_for_device(const std::string& device_name, bool bf16);

// Model FLOP utilisation: achieved / (devices x peak); 0 when peak is unknown.
double mfu(double flops_per_token, double tokens_per_second, int devices, double peak_flops_per_device);

// Appends one JSON object per line to a file, flushed after each record so a
// killed run keeps every record written before the kill. Rank 0 owns it.
class MetricsFile {
 public:
  // Opens path for appending (truncating first unless append); makes its
  // folder. Throws Error when it cannot.
  MetricsFile(const std::string& path, bool append);
  ~MetricsFile();
  MetricsFile(const MetricsFile&) = delete;
  MetricsFile& operator=(const MetricsFile&) = delete;

  // record: one complete JSON object, no newline.
  void write(const std::string& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// A one-line progress bar on stderr, redrawn in place; draws nothing when
// disabled (not a terminal, or turned off).
class ProgressBar {
 public:
  ProgressBar(int64_t total, bool enabled) : total_(total), enabled_(enabled) {}
  ~ProgressBar() { finish(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  bool enabled() const { return enabled_; }
  // done of total steps, with text after the bar and the estimated time left.
  void update(int64_t done, const std::string& text, double eta_seconds);
  // Ends the line (so later output starts on a fresh one).
  void finish();

 private:
  int64_t total_;
  bool enabled_;
  bool drawn_ = false;
};

// "1:02:03" / "02:03".
std::string format_duration(double seconds);

}  // namespace shardtune
