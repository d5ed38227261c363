#include <iostream>

#include "shardtune/comm/communicator.h"
#include "shardtune/config/config.h"

int main() {
  const shardtune::Config config = shardtune::default_config({"comm.timeout_s=12"});
  const shardtune::ShardRange r = shardtune::shard_range(10, 3, 1);
  std::cout << "timeout " << config.comm.timeout_s << " shard " << r.offset << "+" << r.length
            << "\n";
  return config.comm.timeout_s == 12.0 && r.offset == 4 && r.length == 3 ? 0 : 1;
}
