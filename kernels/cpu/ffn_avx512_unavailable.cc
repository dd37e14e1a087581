// Built instead of ffn_avx512.cc when the compiler cannot target AVX-512 BF16 (e.g. not x86): the portable path
// is then the only one (BestCpuIsa never returns kAvx512).
#include "kernels/cpu/ffn_internal.h"

namespace switchyard::kernels::internal {

bool Avx512Compiled() { return false; }
void GemmAvx512(const GemmArgs& args) { GemmPortable(args); }

}  // namespace switchyard::kernels::internal
