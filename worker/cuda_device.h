// The CUDA LayerDevice (worker/layer_device.h), built when the CUDA toolkit is found. Use
// CreateLayerDevice, which checks for a GPU first.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "model/model.h"
#include "worker/layer_device.h"

namespace switchyard::worker {

// `stream`: the cudaStream_t every call queues on (null: the default stream).
absl::StatusOr<std::unique_ptr<LayerDevice>> CreateCudaDevice(const model::ModelConfig& model, void* stream);

}  // namespace switchyard::worker
