// The Communicator conformance suite, written once (STYLE.md): each case is the body one
// rank runs; harnesses run it on every rank of a world — threads (in-process backend) or
// mpirun ranks (mpi, ucx). Bodies use gtest assertions (thread-safe) and must issue the same
// collectives in the same order on every rank.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace switchyard::comm::test {

struct ConformanceCase {
  std::string name;
  std::function<void(Communicator&)> body;
};

std::vector<ConformanceCase> ConformanceCases();

// Fills `n` bytes with a pattern unique to (a, b, c); Check verifies it.
void Fill(char* data, int64_t n, int a, int b, int c);
bool Check(const char* data, int64_t n, int a, int b, int c);

}  // namespace switchyard::comm::test
