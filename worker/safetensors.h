// Reading (and, for tests and exports, writing) safetensors checkpoints: an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the
// tensor bytes. A checkpoint is one .safetensors file or a directory with
// model.safetensors.index.json ("weight_map": tensor -> file) or a single model.safetensors.
// Files are memory-mapped; TensorView points into the mapping.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::worker {

struct TensorView {
  std::string dtype;             // "F32", "BF16", "F16", ...
  std::vector<int64_t> shape;
  const char* data = nullptr;
  size_t bytes = 0;
};

// Parses a whole safetensors file held in `bytes` (header and data); views point into
// `bytes`. Typed and total: a header of the wrong shape, offsets beyond the data, or sizes that
// do not match shape x dtype return InvalidArgument naming `path`, the tensor and the field.
absl::StatusOr<std::map<std::string, TensorView>> ParseSafetensors(absl::string_view bytes, const std::string& path);

class SafetensorsFile {
 public:
  // Errors name the file and what is wrong with it.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }
  absl::StatusOr<TensorView> Tensor(const std::string& name) const;
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  std::map<std::string, TensorView> tensors_;
};

class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path);
  // NotFound naming the tensor and the checkpoint when absent.
  absl::StatusOr<TensorView> Tensor(const std::string& name) const;

 private:
  std::string path_;
  std::map<std::string, std::string> weight_map_;  // tensor -> file (sharded)
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

// A tensor to write: raw little-endian bytes of `dtype` (F32 or BF16) and `shape`.
struct TensorData {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorData>& tensors);

}  // namespace switchyard::worker
