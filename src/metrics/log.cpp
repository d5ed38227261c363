#include "shardtune/metrics/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace shardtune::log {
namespace {

spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::kTrace:
      return spdlog::level::trace;
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
    case Level::kOff:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

}  // namespace

Level parse_level(const std::string& name) {
  if (name == "trace") return Level::kTrace;
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn") return Level::kWarn;
  if (name == "error") return Level::kError;
  if (name == "off") return Level::kOff;
  throw InputError(str_cat("log level '", name,
                           "' is not one of trace, debug, info, warn, error, off"));
}

void init(int rank, const LogConfig& config) {
  auto logger = std::make_shared<spdlog::logger>(
      "shardtune", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern(str_cat("[%Y-%m-%d %H:%M:%S.%e] [rank ", rank, "] [%l] %v"));
  logger->set_level(to_spdlog(parse_level(rank == 0 ? config.level : config.other_ranks_level)));
  // Warnings and errors reach the terminal at once, whatever the buffering.
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(std::move(logger));
}

bool enabled(Level level) { return spdlog::default_logger_raw()->should_log(to_spdlog(level)); }

void write(Level level, const std::string& message) {
  spdlog::default_logger_raw()->log(to_spdlog(level), message);
}

}  // namespace shardtune::log
