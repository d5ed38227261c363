#include "shardtune/metrics/tensorboard.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "shardtune/core/crc32c.h"
#include "shardtune/core/error.h"
#include "tensorboard_event.pb.h"

namespace shardtune {
namespace {

namespace pb = shardtune::tensorboard;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

pb::Event event_at(int64_t step) {
  pb::Event e;
  e.set_wall_time(now_seconds());
  e.set_step(step);
  return e;
}

void flatten(TensorBoardWriter& w, const std::string& prefix, int64_t step, const nlohmann::json& j) {
  for (const auto& [key, v] : j.items()) {
    const std::string tag = prefix + "/" + key;
    if (v.is_object()) {
      flatten(w, tag, step, v);
    } else if (v.is_number()) {
      w.scalar(tag, step, v.get<double>());
    }
  }
}

}  // namespace

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t crc = crc32c(data, n);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t first_step) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(str_cat(dir, ": cannot make the TensorBoard folder: ", ec.message()));
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  static std::atomic<int> counter{0};
  path_ = str_cat(dir, "/events.out.tfevents.", static_cast<int64_t>(now_seconds()), ".", host, ".", ::getpid(), ".",
                  counter++);
  file_ = std::fopen(path_.c_str(), "wbx");
  if (file_ == nullptr) throw Error(str_cat(path_, ": cannot create the TensorBoard event file: ", std::strerror(errno)));
  pb::Event version = event_at(0);
  version.set_file_version("brain.Event:2");
  write_event(version.SerializeAsString());
  pb::Event start = event_at(first_step);
  start.mutable_session_log()->set_status(pb::SessionLog::START);
  write_event(start.SerializeAsString());
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void TensorBoardWriter::write_event(const std::string& bytes) {
  char header[12];
  const uint64_t n = bytes.size();
  std::memcpy(header, &n, 8);  // little-endian, as on every host shardtune builds for
  const uint32_t len_crc = masked_crc32c(header, 8);
  std::memcpy(header + 8, &len_crc, 4);
  const uint32_t data_crc = masked_crc32c(bytes.data(), bytes.size());
  if (std::fwrite(header, 1, sizeof(header), file_) != sizeof(header) ||
      std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size() ||
      std::fwrite(&data_crc, 1, 4, file_) != 4 || std::fflush(file_) != 0) {
    throw Error(str_cat(path_, ": cannot write the TensorBoard event file: ", std::strerror(errno)));
  }
}

void TensorBoardWriter::scalar(const std::string& tag, int64_t step, double value) {
  pb::Event e = event_at(step);
  pb::Summary::Value* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  write_event(e.SerializeAsString());
}

void TensorBoardWriter::text(const std::string& tag, int64_t step, const std::string& markdown) {
  pb::Event e = event_at(step);
  pb::Summary::Value* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  v->mutable_metadata()->mutable_plugin_data()->set_plugin_name("text");
  pb::Tensor* t = v->mutable_tensor();
  t->set_dtype(7);  // string
  t->mutable_tensor_shape();  // a scalar: no dimensions
  t->add_string_val(markdown);
  write_event(e.SerializeAsString());
}

void TensorBoardWriter::record(const nlohmann::json& record) {
  const int64_t step = record.at("step").get<int64_t>();
  nlohmann::json rest = record;
  const std::string type = rest.value("type", "metrics");
  rest.erase("type");
  rest.erase("step");
  flatten(*this, type, step, rest);
}

}  // namespace shardtune
