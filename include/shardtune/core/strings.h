// Small string utilities shared by the modules.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace shardtune {

// Splits s at every occurrence of sep; empty pieces are kept.
std::vector<std::string> split(std::string_view s, char sep);

// Joins parts with sep between them.
std::string join(const std::vector<std::string>& parts, std::string_view sep);

// s without leading and trailing ASCII whitespace.
std::string_view trim(std::string_view s);

// Levenshtein distance between a and b (insert, delete, substitute cost 1).
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to word by edit distance, or "" when none is close
// enough to be a plausible typo (distance <= max(1, |word| / 3), or when one
// contains the other).
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

// The offset of the first byte where s stops being valid UTF-8 (overlong
// forms, surrogates and code points past U+10FFFF are invalid);
// std::string_view::npos when all of it is valid.
size_t utf8_error_at(std::string_view s);

// s, or its first max bytes (cut at a UTF-8 boundary) and "... (N bytes)":
// how error messages quote input, so a huge bad line is never echoed whole.
std::string capped(std::string_view s, size_t max = 200);

// A library's exception text without its leading "[tag] " (nlohmann::json
// writes "[json.exception.type_error.302] type must be ..."), capped; a
// JSON pointer nlohmann::json puts after the tag, "(/model/vocab/a) type
// must be ...", becomes a key path: "model.vocab.a: type must be ...".
std::string without_exception_tag(std::string_view what);

// Peak resident memory of this process so far (VmHWM), in bytes; 0 where
// the system does not say.
int64_t peak_host_memory_bytes();

// Whether inner is outer or lies inside it (paths compared element by
// element, as given: canonicalize them first).
bool path_within(const std::filesystem::path& inner, const std::filesystem::path& outer);

// Throws InputError when writing `output` could destroy `input`: the same
// path, or one inside the other (symbolic links resolved), e.g. an export
// onto its own checkpoint or a convert into the folder holding its source.
// `what` names the command in the message.
void refuse_output_over_input(const std::string& output, const std::string& input, const std::string& what);

}  // namespace shardtune
