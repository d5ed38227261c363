// Rank-aware logging.
//
// After log::init(), messages go to stderr as
//   [2026-11-26 04:12:00.123] [rank 1] [warning] message
// Rank 0 logs at config.level (default info) and the other ranks at
// config.other_ranks_level (default warn), so a 64-rank job prints one
// progress stream, not 64. Program output (tables, configs) goes to stdout.
//
// spdlog does the writing but stays out of this header: libtorch bundles its
// own fmt, which cannot share a translation unit with the fmt spdlog uses.
// Messages are built with str_cat-style argument lists instead.
#pragma once

#include <string>

#include "shardtune/config/config.h"
#include "shardtune/core/error.h"

namespace shardtune::log {

enum class Level { kTrace, kDebug, kInfo, kWarn, kError, kOff };

// Installs the rank-prefixed logger. Call once per process, early; before
// it, messages at info and above are written without a rank prefix.
void init(int rank, const LogConfig& config);

// Parses a level name (trace, debug, info, warn, error, off); throws
// InputError naming the accepted names otherwise.
Level parse_level(const std::string& name);

bool enabled(Level level);
void write(Level level, const std::string& message);

template <typename... Args>
void debug(Args&&... args) {
  if (enabled(Level::kDebug)) write(Level::kDebug, str_cat(std::forward<Args>(args)...));
}
template <typename... Args>
void info(Args&&... args) {
  if (enabled(Level::kInfo)) write(Level::kInfo, str_cat(std::forward<Args>(args)...));
}
template <typename... Args>
void warn(Args&&... args) {
  if (enabled(Level::kWarn)) write(Level::kWarn, str_cat(std::forward<Args>(args)...));
}
template <typename... Args>
void error(Args&&... args) {
  if (enabled(Level::kError)) write(Level::kError, str_cat(std::forward<Args>(args)...));
}

}  // namespace shardtune::log
