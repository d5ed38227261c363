// CRC-32C (Castagnoli), the checksum checkpoints and exported safetensors
// files carry per tensor. torch-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace shardtune {

// The CRC-32C of n bytes, continuing from crc (0 to start):
// crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

// As 8 lowercase hex digits.
std::string crc32c_hex(uint32_t crc);

}  // namespace shardtune
