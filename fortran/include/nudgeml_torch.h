/*
 * nudgeml_torch: a C ABI over libtorch for Fortran (and C) callers.
 *
 * Every function returns a status (NUDGEML_OK = 0, non-zero on error) and never lets a C++
 * exception cross the ABI. The message of the last error of the calling thread is fetched with
 * nudgeml_last_error(). Handles are opaque and belong to the thread that uses them: load one per
 * OpenMP thread (LMDZ's physics runs one per thread on its own columns).
 *
 * Array conventions. A batch is `n` grid columns of `n_features` inputs, float32, physical units.
 * Its layout is given by two element strides: `x_stride_col` (from one column to the next) and
 * `x_stride_feat` (from one feature to the next). Two layouts matter:
 *   - features first, Fortran xt(n_features, n) = C row-major (n, n_features): strides (n_features, 1).
 *     This is the model's own layout: passed to the model as is, no copy.
 *   - columns first, Fortran x(n, n_features) = LMDZ's (klon, ...): strides (1, n). Copied to
 *     row-major first (a transpose), so results are those of Python bit for bit. With
 *     allow_strided = 1 a TorchScript model reads a strided view instead (no copy), but BLAS then
 *     takes other kernels for the transposed operand and the last bits may differ from Python's
 *     for some batch sizes. AOTInductor packages are compiled for row-major input: always copied.
 * Outputs are (n, n_targets) float32 in m s-2, written through `y_stride_col`/`y_stride_target`
 * (one copy out of the tensor the model allocated: a memcpy for strides (n_targets, 1), a transpose
 * for (1, n)), or exposed without copy by nudgeml_model_forward_view().
 */
#ifndef NUDGEML_TORCH_H
#define NUDGEML_TORCH_H

#include <stdint.h>

#if defined(__GNUC__)
#define NUDGEML_API __attribute__((visibility("default")))
#else
#define NUDGEML_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum nudgeml_status {
  NUDGEML_OK = 0,
  NUDGEML_ERR_IO = 1,       /* file missing or unreadable */
  NUDGEML_ERR_FORMAT = 2,   /* manifest or model file malformed */
  NUDGEML_ERR_SHAPE = 3,    /* dimensions disagree (manifest, model, caller) */
  NUDGEML_ERR_TORCH = 4,    /* libtorch raised */
  NUDGEML_ERR_ARG = 5       /* invalid argument (null handle, bad enum, ...) */
};

enum nudgeml_backend {
  NUDGEML_BACKEND_AUTO = 0,        /* by file name: *.pt2 -> AOTI, anything else -> TorchScript */
  NUDGEML_BACKEND_TORCHSCRIPT = 1, /* torch.jit.save file (model.pt) */
  NUDGEML_BACKEND_AOTI = 2         /* AOTInductor package (model.pt2) */
};

enum nudgeml_device { NUDGEML_DEVICE_CPU = 0, NUDGEML_DEVICE_CUDA = 1 };

typedef struct nudgeml_model nudgeml_model;
typedef struct nudgeml_manifest nudgeml_manifest;

/* Copy the calling thread's last error message (NUL-terminated, truncated to len-1 bytes) into buf;
   returns the full message length. */
NUDGEML_API int64_t nudgeml_last_error(char *buf, int64_t len);

/* Number of intra-op threads libtorch uses when a call does not set its own (0 = untouched).
   The OpenMP setting of the caller (omp_get_max_threads) is restored after every call of this
   library, since at::set_num_threads would otherwise leak into the Fortran OpenMP regions. */
NUDGEML_API int nudgeml_set_num_threads(int n);
NUDGEML_API int nudgeml_get_num_threads(void);

/* Load a model and check it: one probe column of zeros must give (1, n_targets) (either of
   n_features/n_targets may be 0 to skip the probe). num_threads > 0: libtorch's intra-op threads
   during this model's calls; 0: leave libtorch's setting (inside an OpenMP parallel region libtorch
   runs on the calling thread only). */
NUDGEML_API int nudgeml_model_load(const char *path, int backend, int device, int device_index, int num_threads,
                       int64_t n_features, int64_t n_targets, nudgeml_model **out);
NUDGEML_API void nudgeml_model_free(nudgeml_model *model);
NUDGEML_API int nudgeml_model_backend(const nudgeml_model *model);

NUDGEML_API int nudgeml_model_forward(nudgeml_model *model, const float *x, int64_t n, int64_t n_features,
                          int64_t x_stride_col, int64_t x_stride_feat, int allow_strided, float *y,
                          int64_t n_targets, int64_t y_stride_col, int64_t y_stride_target);

/* As nudgeml_model_forward, but return a pointer to the model's own output, row-major
   (n, n_targets) = Fortran yt(n_targets, n), valid until the next call on this handle or its free. */
NUDGEML_API int nudgeml_model_forward_view(nudgeml_model *model, const float *x, int64_t n, int64_t n_features,
                               int64_t x_stride_col, int64_t x_stride_feat, int allow_strided, int64_t n_targets,
                               const float **y);

/* Manifest (model.json, or the directory holding it), validated as docs/model-format.md says. */
NUDGEML_API int nudgeml_manifest_read(const char *path, nudgeml_manifest **out);
NUDGEML_API void nudgeml_manifest_free(nudgeml_manifest *m);

enum nudgeml_manifest_count {
  NUDGEML_N_FEATURES = 0,
  NUDGEML_N_TARGETS = 1,
  NUDGEML_N_FEATURE_BLOCKS = 2,
  NUDGEML_N_TARGET_BLOCKS = 3,
  NUDGEML_N_LEVELS = 4
};
NUDGEML_API int64_t nudgeml_manifest_count(const nudgeml_manifest *m, int which);

/* Block `index` (0-based) of the features (kind 0) or targets (kind 1): name and level count. */
NUDGEML_API int nudgeml_manifest_block(const nudgeml_manifest *m, int kind, int64_t index, char *name,
                           int64_t name_len, int64_t *levels);

enum nudgeml_manifest_array {
  NUDGEML_LEVEL_VALUES = 0,
  NUDGEML_FEATURE_MIN = 1,
  NUDGEML_FEATURE_MAX = 2,
  NUDGEML_TARGET_MIN = 3,
  NUDGEML_TARGET_MAX = 4
};
/* Copy one float64 array; n must be its length. */
NUDGEML_API int nudgeml_manifest_array(const nudgeml_manifest *m, int which, double *out, int64_t n);
NUDGEML_API double nudgeml_manifest_margin(const nudgeml_manifest *m);

/* Full path of the artifact of `backend` (TorchScript or AOTI), resolved next to the manifest. */
NUDGEML_API int nudgeml_manifest_artifact(const nudgeml_manifest *m, int backend, char *buf, int64_t len);

#ifdef __cplusplus
}
#endif
#endif
