// Internal to the CPU kernels: the one way they use a rank's threads.
#pragma once

#include <cstdint>

namespace switchyard::kernels::internal {

// Runs body(i) for i in [0, n) on `threads` OpenMP threads, handing out `grain` indices at a
// time (dynamic schedule), or inline when threads <= 1 or there is one index. Each index is
// one thread's whole work, so results never depend on the thread count as long as body(i)
// writes only what index i owns.
template <typename Body>
void ParallelFor(int threads, int64_t n, int64_t grain, const Body& body) {
  if (threads <= 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(dynamic, grain)
  for (int64_t i = 0; i < n; ++i) body(i);
}

}  // namespace switchyard::kernels::internal
