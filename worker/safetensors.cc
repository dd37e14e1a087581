#include "worker/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/json_reader.h"
#include "common/status.h"

namespace switchyard::worker {
namespace {

constexpr size_t kMaxDims = 8;
constexpr int64_t kMaxDim = int64_t{1} << 40;

size_t DtypeBytes(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "BF16" || dtype == "F16" || dtype == "I16") return 2;
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F8_E4M3" || dtype == "F8_E5M2" || dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

}  // namespace

absl::StatusOr<std::map<std::string, TensorView>> ParseSafetensors(absl::string_view bytes, const std::string& path) {
  const char* base = bytes.data();
  if (bytes.size() < 8) return absl::InvalidArgumentError(absl::StrCat(path, ": too short for a safetensors file"));
  std::map<std::string, TensorView> tensors;
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);
  if (header_len > bytes.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len, " beyond the file"));
  }
  const std::string header_where = absl::StrCat(path, " header");
  SY_ASSIGN_OR_RETURN(const Json header, ParseJson(absl::string_view(base + 8, header_len), header_where));
  const JsonReader rd(header_where);
  SY_RETURN_IF_ERROR(rd.Object(header, "$"));
  const char* data = base + 8 + header_len;
  const uint64_t data_bytes = bytes.size() - 8 - header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = JsonPath("$", EchoValue(name));
    TensorView v;
    SY_ASSIGN_OR_RETURN(v.dtype, rd.StringField(entry, "dtype", where));
    SY_ASSIGN_OR_RETURN(const Json* shape, rd.ArrayField(entry, "shape", where));
    if (shape->size() > kMaxDims) return rd.Error(JsonPath(where, "shape"), absl::StrCat(shape->size(), " dimensions"));
    // Elements, checked against the bytes the tensor spans (itself at most the file size), so
    // that a hostile shape cannot overflow the product.
    uint64_t elements = 1;
    for (size_t i = 0; i < shape->size(); ++i) {
      SY_ASSIGN_OR_RETURN(const int64_t d, rd.Int((*shape)[i], JsonPath(JsonPath(where, "shape"), i), 0, kMaxDim));
      v.shape.push_back(d);
      const uint64_t dim = static_cast<uint64_t>(d);
      elements = dim != 0 && elements > data_bytes / dim ? data_bytes + 1 : elements * dim;  // saturates past the data
    }
    SY_ASSIGN_OR_RETURN(const Json* offsets, rd.ArrayField(entry, "data_offsets", where));
    if (offsets->size() != 2) return rd.Error(JsonPath(where, "data_offsets"), "expected [begin, end]");
    SY_ASSIGN_OR_RETURN(const int64_t begin, rd.Int((*offsets)[0], JsonPath(JsonPath(where, "data_offsets"), 0), 0, std::numeric_limits<int64_t>::max()));
    SY_ASSIGN_OR_RETURN(const int64_t end, rd.Int((*offsets)[1], JsonPath(JsonPath(where, "data_offsets"), 1), 0, std::numeric_limits<int64_t>::max()));
    if (begin > end || static_cast<uint64_t>(end) > data_bytes) {
      return rd.Error(JsonPath(where, "data_offsets"),
                      absl::StrCat("[", begin, ", ", end, ") is not within the ", data_bytes, " data bytes of the file"));
    }
    v.data = data + begin;
    v.bytes = static_cast<size_t>(end - begin);
    if (const size_t size = DtypeBytes(v.dtype); size != 0 && (elements > data_bytes || size * elements != v.bytes)) {
      return rd.Error(where, absl::StrCat(v.bytes, " bytes do not match its shape and dtype ", EchoValue(v.dtype)));
    }
    tensors[name] = std::move(v);
  }
  return tensors;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  // O_NONBLOCK: a FIFO (or a device) named as a shard must not block the open; it is then
  // refused as not a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  if (st.st_size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": too short for a safetensors file"));
  }
  file->map_bytes_ = static_cast<size_t>(st.st_size);
  file->map_ = mmap(nullptr, file->map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (file->map_ == MAP_FAILED) {
    file->map_ = nullptr;
    return absl::InternalError(absl::StrCat("cannot map ", path));
  }
  SY_ASSIGN_OR_RETURN(file->tensors_,
                      ParseSafetensors(absl::string_view(static_cast<const char*>(file->map_), file->map_bytes_), path));
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, map_bytes_);
}

absl::StatusOr<TensorView> SafetensorsFile::Tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return absl::NotFoundError(absl::StrCat(path_, ": no tensor ", name));
  return it->second;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& path) {
  auto ckpt = std::make_unique<Checkpoint>();
  ckpt->path_ = path;
  std::string single = path;
  if (std::filesystem::is_directory(path)) {
    const std::string index = path + "/model.safetensors.index.json";
    if (std::filesystem::exists(index)) {
      SY_ASSIGN_OR_RETURN(const std::string text, ReadFile(index));
      SY_ASSIGN_OR_RETURN(const Json j, ParseJson(text, index));
      const JsonReader rd(index);
      SY_ASSIGN_OR_RETURN(const Json* weight_map, rd.Field(j, "weight_map", "$"));
      SY_RETURN_IF_ERROR(rd.Object(*weight_map, "$.weight_map"));
      for (const auto& [tensor, file] : weight_map->items()) {
        SY_ASSIGN_OR_RETURN(const std::string name, rd.String(file, JsonPath("$.weight_map", EchoValue(tensor))));
        // Shards live in the checkpoint's directory: a name that leaves it is refused.
        if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
          return rd.Error(JsonPath("$.weight_map", EchoValue(tensor)), absl::StrCat("'", EchoValue(name), "' is not a file name in ", path));
        }
        ckpt->weight_map_[tensor] = path + "/" + name;
      }
      if (ckpt->weight_map_.empty()) return rd.Error("$.weight_map", "lists no tensors");
      return ckpt;
    }
    single = path + "/model.safetensors";
  }
  SY_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single));
  ckpt->files_[single] = std::move(file);
  return ckpt;
}

absl::StatusOr<TensorView> Checkpoint::Tensor(const std::string& name) const {
  std::string file;
  if (!weight_map_.empty()) {
    auto it = weight_map_.find(name);
    if (it == weight_map_.end()) return absl::NotFoundError(absl::StrCat(path_, ": no tensor ", name));
    file = it->second;
  } else if (!files_.empty()) {
    file = files_.begin()->first;
  } else {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor ", name));
  }
  auto it = files_.find(file);
  if (it == files_.end()) {
    SY_ASSIGN_OR_RETURN(auto opened, SafetensorsFile::Open(file));
    it = const_cast<Checkpoint*>(this)->files_.emplace(file, std::move(opened)).first;
  }
  return it->second->Tensor(name);
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorData>& tensors) {
  Json header = Json::object();
  uint64_t offset = 0;
  for (const TensorData& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data aligned to 8 bytes
  std::string out(8, '\0');
  const uint64_t len = text.size();
  std::memcpy(out.data(), &len, 8);
  out += text;
  for (const TensorData& t : tensors) out += t.bytes;
  return WriteFileAtomically(path, out);
}

}  // namespace switchyard::worker
