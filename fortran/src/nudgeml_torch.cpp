// nudgeml_torch: C ABI over libtorch (TorchScript and AOTInductor) and the model.json reader.
// See ../include/nudgeml_torch.h for the contract; this file keeps every C++ exception inside.

#include "nudgeml_torch.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <omp.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "json_min.hpp"

namespace {

thread_local std::string last_error;

int fail(int status, std::string message) {
  last_error = std::move(message);
  return status;
}

// Our own error, raised inside the shim and turned into a status at the C boundary.
struct Error {
  int status;
  std::string message;
};

[[noreturn]] void raise(int status, std::string message) { throw Error{status, std::move(message)}; }

// libtorch messages (TorchScript's above all) open with a traceback; the cause is the last line.
// Put it first, so that a caller's fixed-length message buffer keeps it.
std::string cause_first(const std::string &what) {
  std::size_t end = what.find_last_not_of(" \n\t\r");
  if (end == std::string::npos) return what;
  std::size_t start = what.find_last_of('\n', end);
  start = start == std::string::npos ? 0 : start + 1;
  std::string last = what.substr(start, end - start + 1);
  std::size_t first = last.find_first_not_of(" \t");
  if (first != std::string::npos) last = last.substr(first);
  if (start == 0) return last;
  return last + "\n" + what;
}

// c10::Error's what() carries a C++ backtrace; keep the message only.
std::string what_of(const std::exception &e) {
  if (const auto *ce = dynamic_cast<const c10::Error *>(&e)) return ce->what_without_backtrace();
  return e.what();
}

// Run `body`, mapping every exception to a status and a message for nudgeml_last_error().
template <class F>
int guarded(const char *where, F &&body) {
  try {
    body();
    last_error.clear();
    return NUDGEML_OK;
  } catch (const Error &e) {
    return fail(e.status, e.message);
  } catch (const c10::Error &e) {
    return fail(NUDGEML_ERR_TORCH, std::string(where) + ": libtorch: " + cause_first(e.what_without_backtrace()));
  } catch (const std::exception &e) {
    return fail(NUDGEML_ERR_TORCH, std::string(where) + ": libtorch: " + cause_first(e.what()));
  } catch (...) {
    return fail(NUDGEML_ERR_TORCH, std::string(where) + ": unknown C++ exception");
  }
}

// at::set_num_threads() calls omp_set_num_threads(), and libtorch's first use in a thread sets it
// too (at::init_num_threads). Both would change the thread count of the caller's next Fortran
// OpenMP region; this guard restores the caller's value on the way out.
class OmpThreadsGuard {
 public:
  OmpThreadsGuard() : saved_(omp_get_max_threads()) {}
  ~OmpThreadsGuard() { omp_set_num_threads(saved_); }
  OmpThreadsGuard(const OmpThreadsGuard &) = delete;
  OmpThreadsGuard &operator=(const OmpThreadsGuard &) = delete;

 private:
  int saved_;
};

int default_threads = 0;  // nudgeml_set_num_threads; 0 = leave libtorch alone

bool ends_with(const std::string &s, const std::string &tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

void require_readable(const std::string &path, const char *what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    raise(NUDGEML_ERR_IO, std::string("cannot open ") + what + " '" + path + "': is a directory");
  std::ifstream f(path, std::ios::binary);
  if (!f) raise(NUDGEML_ERR_IO, std::string("cannot open ") + what + " '" + path + "': " + std::strerror(errno));
}

}  // namespace

struct nudgeml_model {
  int backend = NUDGEML_BACKEND_TORCHSCRIPT;
  c10::Device device{c10::kCPU};
  int num_threads = 0;
  std::string path;
  torch::jit::Module script;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> aoti;
  at::Tensor last_output;  // kept alive for nudgeml_model_forward_view

  at::Tensor run(const at::Tensor &x) {
    if (backend == NUDGEML_BACKEND_AOTI) {
      std::vector<at::Tensor> out = aoti->run({x});
      if (out.size() != 1) raise(NUDGEML_ERR_SHAPE, path + ": AOTI package returned " + std::to_string(out.size()) + " outputs, expected 1");
      return out[0];
    }
    c10::IValue out = script.forward({x});
    if (!out.isTensor()) raise(NUDGEML_ERR_SHAPE, path + ": TorchScript forward did not return a tensor");
    return out.toTensor();
  }
};

namespace {

void apply_threads(const nudgeml_model *m) {
  int n = m->num_threads > 0 ? m->num_threads : default_threads;
  if (n > 0 && at::get_num_threads() != n) at::set_num_threads(n);
}

void check_batch(const nudgeml_model *m, const void *x, int64_t n, int64_t nf, int64_t nt) {
  if (m == nullptr) raise(NUDGEML_ERR_ARG, "model handle is null (not loaded, or freed)");
  if (x == nullptr) raise(NUDGEML_ERR_ARG, "input array is null");
  if (n < 1 || nf < 1 || nt < 1)
    raise(NUDGEML_ERR_SHAPE, "batch dimensions must be positive: n = " + std::to_string(n) +
                                 ", n_features = " + std::to_string(nf) + ", n_targets = " + std::to_string(nt));
}

// The model's input. Row-major (n, n_features) memory is passed as is (no copy). Any other layout
// is copied to row-major first, unless `allow_strided` and the backend is TorchScript: then the
// model reads a strided view. That view saves the copy but not the bits: BLAS takes other kernels
// for a transposed operand, so results may differ from Python's in the last place.
at::Tensor input_tensor(nudgeml_model *m, const float *x, int64_t n, int64_t nf, int64_t s_col, int64_t s_feat,
                        int allow_strided) {
  // from_blob never writes through the pointer here: the models treat their input as read-only.
  at::Tensor t = torch::from_blob(const_cast<float *>(x), {n, nf}, {s_col, s_feat},
                                  torch::TensorOptions().dtype(torch::kFloat32));
  if (m->device.is_cuda()) return t.to(m->device, /*non_blocking=*/false, /*copy=*/true).contiguous();
  if (t.is_contiguous()) return t;
  // AOTInductor kernels are generated for the row-major layout the package was exported with.
  if (allow_strided && m->backend == NUDGEML_BACKEND_TORCHSCRIPT) return t;
  return t.contiguous();
}

at::Tensor checked_output(nudgeml_model *m, at::Tensor y, int64_t n, int64_t nt) {
  if (y.dim() != 2 || y.size(0) != n || y.size(1) != nt)
    raise(NUDGEML_ERR_SHAPE, m->path + ": model output has shape " + c10::str(y.sizes()) + ", expected [" +
                                 std::to_string(n) + ", " + std::to_string(nt) + "]");
  if (y.scalar_type() != torch::kFloat32)
    raise(NUDGEML_ERR_SHAPE, m->path + ": model output is " + std::string(c10::toString(y.scalar_type())) + ", expected float32");
  if (!y.device().is_cpu()) y = y.to(c10::kCPU);
  return y;
}

}  // namespace

extern "C" {

int64_t nudgeml_last_error(char *buf, int64_t len) {
  if (buf != nullptr && len > 0) {
    std::size_t n = std::min<std::size_t>(last_error.size(), static_cast<std::size_t>(len - 1));
    std::memcpy(buf, last_error.data(), n);
    buf[n] = '\0';
  }
  return static_cast<int64_t>(last_error.size());
}

int nudgeml_set_num_threads(int n) {
  if (n < 0) return fail(NUDGEML_ERR_ARG, "nudgeml_set_num_threads: negative thread count");
  default_threads = n;
  return NUDGEML_OK;
}

int nudgeml_get_num_threads(void) {
  OmpThreadsGuard keep;
  return at::get_num_threads();
}

int nudgeml_model_load(const char *path, int backend, int device, int device_index, int num_threads,
                       int64_t n_features, int64_t n_targets, nudgeml_model **out) {
  if (out == nullptr) return fail(NUDGEML_ERR_ARG, "nudgeml_model_load: null output handle");
  *out = nullptr;
  OmpThreadsGuard keep;
  std::unique_ptr<nudgeml_model> m(new nudgeml_model);
  int status = guarded("nudgeml_model_load", [&] {
    if (path == nullptr || *path == '\0') raise(NUDGEML_ERR_ARG, "model path is empty");
    m->path = path;
    if (backend == NUDGEML_BACKEND_AUTO) backend = ends_with(m->path, ".pt2") ? NUDGEML_BACKEND_AOTI : NUDGEML_BACKEND_TORCHSCRIPT;
    if (backend != NUDGEML_BACKEND_TORCHSCRIPT && backend != NUDGEML_BACKEND_AOTI)
      raise(NUDGEML_ERR_ARG, "unknown backend code " + std::to_string(backend));
    if (device != NUDGEML_DEVICE_CPU && device != NUDGEML_DEVICE_CUDA)
      raise(NUDGEML_ERR_ARG, "unknown device code " + std::to_string(device));
    if (num_threads < 0) raise(NUDGEML_ERR_ARG, "negative thread count");
    m->backend = backend;
    m->num_threads = num_threads;
    m->device = device == NUDGEML_DEVICE_CUDA ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device_index))
                                              : c10::Device(c10::kCPU);
    require_readable(m->path, backend == NUDGEML_BACKEND_AOTI ? "AOTI package" : "TorchScript model");
    apply_threads(m.get());
    c10::InferenceMode inference;
    try {
      if (backend == NUDGEML_BACKEND_AOTI) {
        m->aoti = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
            m->path, "model", /*run_single_threaded=*/false, /*num_runners=*/1,
            device == NUDGEML_DEVICE_CUDA ? static_cast<c10::DeviceIndex>(device_index) : -1);
      } else {
        m->script = torch::jit::load(m->path, m->device);
        m->script.eval();
      }
    } catch (const std::exception &e) {
      raise(NUDGEML_ERR_FORMAT, "cannot load '" + m->path + "' as " +
                                    (backend == NUDGEML_BACKEND_AOTI ? "an AOTI package" : "TorchScript") + ": " +
                                    cause_first(what_of(e)));
    }
    if (n_features > 0 && n_targets > 0) {
      // One column of zeros: catches a model whose input or output size disagrees with the manifest.
      at::Tensor probe = torch::zeros({1, n_features}, torch::kFloat32).to(m->device);
      at::Tensor y;
      try {
        y = m->run(probe);
      } catch (const std::exception &e) {
        raise(NUDGEML_ERR_SHAPE, m->path + ": model rejects input of shape [1, " + std::to_string(n_features) +
                                     "] (manifest n_features): " + cause_first(what_of(e)));
      }
      checked_output(m.get(), y, 1, n_targets);
    }
  });
  if (status == NUDGEML_OK) *out = m.release();
  return status;
}

void nudgeml_model_free(nudgeml_model *model) {
  OmpThreadsGuard keep;
  try {
    delete model;
  } catch (...) {
  }
}

int nudgeml_model_backend(const nudgeml_model *model) { return model ? model->backend : -1; }

int nudgeml_model_forward(nudgeml_model *model, const float *x, int64_t n, int64_t n_features,
                          int64_t x_stride_col, int64_t x_stride_feat, int allow_strided, float *y,
                          int64_t n_targets, int64_t y_stride_col, int64_t y_stride_target) {
  OmpThreadsGuard keep;
  return guarded("nudgeml_model_forward", [&] {
    check_batch(model, x, n, n_features, n_targets);
    if (y == nullptr) raise(NUDGEML_ERR_ARG, "output array is null");
    apply_threads(model);
    c10::InferenceMode inference;
    at::Tensor in = input_tensor(model, x, n, n_features, x_stride_col, x_stride_feat, allow_strided);
    at::Tensor out = checked_output(model, model->run(in), n, n_targets);
    at::Tensor dest = torch::from_blob(y, {n, n_targets}, {y_stride_col, y_stride_target}, torch::TensorOptions().dtype(torch::kFloat32));
    dest.copy_(out);
  });
}

int nudgeml_model_forward_view(nudgeml_model *model, const float *x, int64_t n, int64_t n_features,
                               int64_t x_stride_col, int64_t x_stride_feat, int allow_strided, int64_t n_targets,
                               const float **y) {
  OmpThreadsGuard keep;
  return guarded("nudgeml_model_forward_view", [&] {
    check_batch(model, x, n, n_features, n_targets);
    if (y == nullptr) raise(NUDGEML_ERR_ARG, "output pointer is null");
    *y = nullptr;
    apply_threads(model);
    c10::InferenceMode inference;
    at::Tensor in = input_tensor(model, x, n, n_features, x_stride_col, x_stride_feat, allow_strided);
    at::Tensor out = checked_output(model, model->run(in), n, n_targets);
    if (!out.is_contiguous()) out = out.contiguous();
    model->last_output = out;
    *y = out.data_ptr<float>();
  });
}

}  // extern "C"

// ------------------------------------------------------------------------------------------------
// Manifest
// ------------------------------------------------------------------------------------------------

struct nudgeml_manifest {
  struct Block {
    std::string name;
    int64_t levels;
  };
  std::string path;  // of model.json
  std::string dir;
  std::vector<Block> features, targets;
  int64_t n_features = 0, n_targets = 0;
  std::vector<double> levels, feature_min, feature_max, target_min, target_max;
  double margin = 0.0;
  std::string torchscript, aoti;
};

namespace {

using nudgeml::json::Value;

class ManifestReader {
 public:
  explicit ManifestReader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void bad(const std::string &key, const std::string &why) const {
    raise(NUDGEML_ERR_FORMAT, path_ + ": key '" + key + "' " + why);
  }

  const Value &get(const Value &obj, const std::string &key, Value::Type type, const std::string &where) const {
    std::string full = where.empty() ? key : where + "." + key;
    const Value *v = obj.find(key);
    if (v == nullptr) bad(full, "is missing");
    if (v->type != type)
      bad(full, std::string("must be ") + Value::type_name(type) + ", got " + Value::type_name(v->type));
    return *v;
  }

  int64_t integer(const Value &obj, const std::string &key, const std::string &where) const {
    const Value &v = get(obj, key, Value::Type::Number, where);
    double d = v.number;
    if (!(std::floor(d) == d) || std::fabs(d) > 9.0e15)
      bad(where.empty() ? key : where + "." + key, "must be an integer");
    return static_cast<int64_t>(d);
  }

  std::vector<double> numbers(const Value &arr, const std::string &key) const {
    std::vector<double> out;
    out.reserve(arr.array.size());
    for (std::size_t i = 0; i < arr.array.size(); ++i) {
      const Value &v = arr.array[i];
      if (v.type != Value::Type::Number || !std::isfinite(v.number))
        bad(key + "[" + std::to_string(i) + "]", "must be a finite number");
      out.push_back(v.number);
    }
    return out;
  }

  std::vector<nudgeml_manifest::Block> blocks(const Value &root, const std::string &key) const {
    const Value &arr = get(root, key, Value::Type::Array, "");
    if (arr.array.empty()) bad(key, "must list at least one block");
    std::vector<nudgeml_manifest::Block> out;
    for (std::size_t i = 0; i < arr.array.size(); ++i) {
      std::string where = key + "[" + std::to_string(i) + "]";
      const Value &b = arr.array[i];
      if (b.type != Value::Type::Object) bad(where, "must be an object");
      std::string name = get(b, "name", Value::Type::String, where).string;
      get(b, "units", Value::Type::String, where);
      int64_t levels = integer(b, "levels", where);
      if (levels < 1) bad(where + ".levels", "must be >= 1, got " + std::to_string(levels));
      if (name.empty() || !std::isalpha(static_cast<unsigned char>(name[0])) ||
          name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != std::string::npos)
        bad(where + ".name", "'" + name + "' is not a name ([A-Za-z][A-Za-z0-9_]*)");
      for (const auto &prev : out)
        if (prev.name == name) bad(where + ".name", "'" + name + "' appears twice");
      out.push_back({name, levels});
    }
    return out;
  }

  static std::vector<std::string> expand(const std::vector<nudgeml_manifest::Block> &blocks) {
    std::vector<std::string> names;
    for (const auto &b : blocks) {
      if (b.levels == 1) {
        names.push_back(b.name);
        continue;
      }
      for (int64_t k = 0; k < b.levels; ++k) {
        char suffix[24];
        std::snprintf(suffix, sizeof suffix, "_%03lld", static_cast<long long>(k));
        names.push_back(b.name + suffix);
      }
    }
    return names;
  }

  void read(nudgeml_manifest &m) const {
    require_readable(path_, "manifest");
    std::ifstream f(path_, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    Value root;
    try {
      root = nudgeml::json::parse(ss.str());
    } catch (const nudgeml::json::ParseError &e) {
      raise(NUDGEML_ERR_FORMAT, path_ + ": " + e.what());
    }
    if (root.type != Value::Type::Object) raise(NUDGEML_ERR_FORMAT, path_ + ": top level must be a JSON object");

    const std::string &fmt = get(root, "format", Value::Type::String, "").string;
    if (fmt != "nudgeml-model") bad("format", "is '" + fmt + "', expected 'nudgeml-model'");
    int64_t version = integer(root, "format_version", "");
    if (version != 1) bad("format_version", "is " + std::to_string(version) + ", this reader knows only 1");
    get(root, "name", Value::Type::String, "");
    get(root, "kind", Value::Type::String, "");

    m.features = blocks(root, "features");
    m.targets = blocks(root, "targets");
    m.n_features = integer(root, "n_features", "");
    m.n_targets = integer(root, "n_targets", "");
    int64_t nf = 0, nt = 0;
    for (const auto &b : m.features) nf += b.levels;
    for (const auto &b : m.targets) nt += b.levels;
    if (m.n_features != nf)
      bad("n_features", "= " + std::to_string(m.n_features) + " but the feature blocks expand to " + std::to_string(nf) + " columns");
    if (m.n_targets != nt)
      bad("n_targets", "= " + std::to_string(m.n_targets) + " but the target blocks expand to " + std::to_string(nt) + " columns");
    for (const char *key : {"feature_names", "target_names"}) {
      const Value &names = get(root, key, Value::Type::Array, "");
      std::vector<std::string> want = expand(std::strcmp(key, "feature_names") == 0 ? m.features : m.targets);
      bool same = names.array.size() == want.size();
      for (std::size_t i = 0; same && i < want.size(); ++i)
        same = names.array[i].type == Value::Type::String && names.array[i].string == want[i];
      if (!same) bad(key, "disagrees with the expansion of its blocks");
    }

    const Value &lv = get(root, "levels", Value::Type::Object, "");
    const std::string &order = get(lv, "order", Value::Type::String, "levels").string;
    if (order != "surface_first") bad("levels.order", "is '" + order + "', expected 'surface_first'");
    m.levels = numbers(get(lv, "values", Value::Type::Array, "levels"), "levels.values");
    auto nlev = static_cast<int64_t>(m.levels.size());
    for (int kind = 0; kind < 2; ++kind) {
      const auto &bl = kind == 0 ? m.features : m.targets;
      for (std::size_t i = 0; i < bl.size(); ++i)
        if (bl[i].levels != 1 && bl[i].levels != nlev)
          bad(std::string(kind == 0 ? "features" : "targets") + "[" + std::to_string(i) + "].levels",
              "= " + std::to_string(bl[i].levels) + ", levels.values has " + std::to_string(nlev));
    }

    const Value &gd = get(root, "guard", Value::Type::Object, "");
    m.margin = get(gd, "margin", Value::Type::Number, "guard").number;
    if (!std::isfinite(m.margin) || m.margin < 0) bad("guard.margin", "must be a finite number >= 0");
    struct {
      const char *key;
      std::vector<double> *dest;
      int64_t n;
      const char *expected;
    } arrays[] = {{"feature_min", &m.feature_min, m.n_features, "n_features"},
                  {"feature_max", &m.feature_max, m.n_features, "n_features"},
                  {"target_min", &m.target_min, m.n_targets, "n_targets"},
                  {"target_max", &m.target_max, m.n_targets, "n_targets"}};
    for (auto &a : arrays) {
      std::string key = std::string("guard.") + a.key;
      *a.dest = numbers(get(gd, a.key, Value::Type::Array, "guard"), key);
      if (static_cast<int64_t>(a.dest->size()) != a.n)
        bad(key, "has " + std::to_string(a.dest->size()) + " entries, expected " + a.expected + " = " + std::to_string(a.n));
    }
    for (int64_t j = 0; j < m.n_features; ++j)
      if (m.feature_min[j] > m.feature_max[j]) bad("guard.feature_min[" + std::to_string(j) + "]", "exceeds guard.feature_max");
    for (int64_t j = 0; j < m.n_targets; ++j)
      if (m.target_min[j] > m.target_max[j]) bad("guard.target_min[" + std::to_string(j) + "]", "exceeds guard.target_max");

    const Value &art = get(root, "artifacts", Value::Type::Object, "");
    for (const char *key : {"torchscript", "aoti"}) {
      const std::string &file = get(art, key, Value::Type::String, "artifacts").string;
      if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
        bad(std::string("artifacts.") + key, "must be a file name in the model directory, got '" + file + "'");
      (std::strcmp(key, "aoti") == 0 ? m.aoti : m.torchscript) = file;
    }
  }

 private:
  std::string path_;
};

}  // namespace

extern "C" {

int nudgeml_manifest_read(const char *path, nudgeml_manifest **out) {
  if (out == nullptr) return fail(NUDGEML_ERR_ARG, "nudgeml_manifest_read: null output handle");
  *out = nullptr;
  std::unique_ptr<nudgeml_manifest> m(new nudgeml_manifest);
  int status = guarded("nudgeml_manifest_read", [&] {
    if (path == nullptr || *path == '\0') raise(NUDGEML_ERR_ARG, "manifest path is empty");
    std::string p = path;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    // A directory, or anything not naming a .json file, is a model directory.
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec) || !ends_with(p, ".json")) p += "/model.json";
    m->path = p;
    std::size_t slash = p.find_last_of('/');
    m->dir = slash == std::string::npos ? "." : p.substr(0, slash);
    ManifestReader(p).read(*m);
  });
  if (status == NUDGEML_OK) *out = m.release();
  return status;
}

void nudgeml_manifest_free(nudgeml_manifest *m) { delete m; }

int64_t nudgeml_manifest_count(const nudgeml_manifest *m, int which) {
  if (m == nullptr) return -1;
  switch (which) {
    case NUDGEML_N_FEATURES: return m->n_features;
    case NUDGEML_N_TARGETS: return m->n_targets;
    case NUDGEML_N_FEATURE_BLOCKS: return static_cast<int64_t>(m->features.size());
    case NUDGEML_N_TARGET_BLOCKS: return static_cast<int64_t>(m->targets.size());
    case NUDGEML_N_LEVELS: return static_cast<int64_t>(m->levels.size());
    default: return -1;
  }
}

int nudgeml_manifest_block(const nudgeml_manifest *m, int kind, int64_t index, char *name, int64_t name_len,
                           int64_t *levels) {
  if (m == nullptr || name == nullptr || levels == nullptr || name_len < 1)
    return fail(NUDGEML_ERR_ARG, "nudgeml_manifest_block: null argument");
  if (kind != 0 && kind != 1) return fail(NUDGEML_ERR_ARG, "nudgeml_manifest_block: kind must be 0 or 1");
  const auto &bl = kind == 0 ? m->features : m->targets;
  if (index < 0 || index >= static_cast<int64_t>(bl.size()))
    return fail(NUDGEML_ERR_ARG, "nudgeml_manifest_block: index out of range");
  const std::string &s = bl[index].name;
  if (static_cast<int64_t>(s.size()) >= name_len)
    return fail(NUDGEML_ERR_ARG, "nudgeml_manifest_block: name '" + s + "' longer than the buffer");
  std::memcpy(name, s.c_str(), s.size() + 1);
  *levels = bl[index].levels;
  return NUDGEML_OK;
}

int nudgeml_manifest_array(const nudgeml_manifest *m, int which, double *out, int64_t n) {
  if (m == nullptr || out == nullptr) return fail(NUDGEML_ERR_ARG, "nudgeml_manifest_array: null argument");
  const std::vector<double> *v = nullptr;
  switch (which) {
    case NUDGEML_LEVEL_VALUES: v = &m->levels; break;
    case NUDGEML_FEATURE_MIN: v = &m->feature_min; break;
    case NUDGEML_FEATURE_MAX: v = &m->feature_max; break;
    case NUDGEML_TARGET_MIN: v = &m->target_min; break;
    case NUDGEML_TARGET_MAX: v = &m->target_max; break;
    default: return fail(NUDGEML_ERR_ARG, "nudgeml_manifest_array: unknown array code");
  }
  if (static_cast<int64_t>(v->size()) != n)
    return fail(NUDGEML_ERR_SHAPE, "nudgeml_manifest_array: array has " + std::to_string(v->size()) +
                                       " entries, caller expects " + std::to_string(n));
  std::copy(v->begin(), v->end(), out);
  return NUDGEML_OK;
}

double nudgeml_manifest_margin(const nudgeml_manifest *m) { return m ? m->margin : std::nan(""); }

int nudgeml_manifest_artifact(const nudgeml_manifest *m, int backend, char *buf, int64_t len) {
  if (m == nullptr || buf == nullptr || len < 1) return fail(NUDGEML_ERR_ARG, "nudgeml_manifest_artifact: null argument");
  if (backend != NUDGEML_BACKEND_TORCHSCRIPT && backend != NUDGEML_BACKEND_AOTI)
    return fail(NUDGEML_ERR_ARG, "nudgeml_manifest_artifact: backend must be TorchScript or AOTI");
  std::string full = m->dir + "/" + (backend == NUDGEML_BACKEND_AOTI ? m->aoti : m->torchscript);
  if (static_cast<int64_t>(full.size()) >= len)
    return fail(NUDGEML_ERR_ARG, "nudgeml_manifest_artifact: path longer than the buffer (" + std::to_string(full.size()) + ")");
  std::memcpy(buf, full.c_str(), full.size() + 1);
  return NUDGEML_OK;
}

}  // extern "C"
