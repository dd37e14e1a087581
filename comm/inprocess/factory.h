// In-process backend: `size` ranks as threads of one process, for fast tests of everything
// above comm/. Messages are copied through shared mailboxes; timeouts and errors behave as
// on the real backends. Host memory only.
#pragma once

#include <memory>
#include <vector>

#include "comm/communicator.h"

namespace switchyard::comm {

// One Communicator per rank (hand each to its own thread). Nodes are blocks of
// `ranks_per_node` consecutive ranks (0: all on one node).
std::vector<std::unique_ptr<Communicator>> CreateInProcessWorld(int size, int ranks_per_node = 0);

}  // namespace switchyard::comm
