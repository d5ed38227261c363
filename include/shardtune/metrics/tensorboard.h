// TensorBoard event files: what `tensorboard --logdir` reads. Each record is
// TensorBoard's framing (length, masked CRC-32C of the length, an Event
// protocol buffer, masked CRC-32C of it), the Events written with protobuf.
// Rank 0 owns the writer. torch-free.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace shardtune {

class TensorBoardWriter {
 public:
  // Starts a new event file in dir (made if missing), named as TensorBoard
  // names its own (events.out.tfevents.<time>.<host>.<pid>.<n>). Its first
  // event after the version marks a session starting at first_step: readers
  // drop the points of earlier files at first_step and later (what a run
  // resumed from step first_step - 1 will write again). Throws Error when it
  // cannot write.
  TensorBoardWriter(const std::string& dir, int64_t first_step);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void scalar(const std::string& tag, int64_t step, double value);
  // Markdown, shown by TensorBoard's text dashboard.
  void text(const std::string& tag, int64_t step, const std::string& markdown);
  // Every number of a metrics.jsonl record ({"type": T, "step": S, ...}) as
  // scalar "T/key" (nested objects: "T/key/sub"); strings, booleans and
  // nulls (a non-finite loss is "NaN") are not scalars and are left out.
  void record(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  void write_event(const std::string& bytes);
  std::string path_;
  std::FILE* file_ = nullptr;
};

// TensorBoard's checksum of a record's parts: CRC-32C rotated right by 15
// bits plus 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t n);

}  // namespace shardtune
