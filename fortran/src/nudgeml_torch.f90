!> Fortran interface to the nudgeml libtorch shim (libnudgeml_torch, C ABI in nudgeml_torch.h).
!>
!> Every kind is explicit (c_float, c_double, c_int, c_int64_t), so the module means the same when
!> compiled with LMDZ's -r8 (gfortran -fdefault-real-8, ifort -r8) or without it.
!>
!> Layouts (n columns, nf features, nt targets; all float32):
!>   nml_forward      x(n, nf)  -> y(n, nt)    columns first, as LMDZ's (klon, klev) arrays.
!>                    x is copied (transposed) to the model's row-major layout and y is filled by a
!>                    transposing copy of the model's output: results are Python's, bit for bit.
!>                    strided_view=.true. lets a TorchScript model read x in place (no input copy);
!>                    BLAS then takes other kernels for the transposed operand and the last bits may
!>                    differ from Python's for some batch sizes (seen for 7 columns, not for 257).
!>   nml_forward_t    xt(nf, n) -> yt(nt, n)   features first = the model's row-major (n, nf):
!>                    no input copy on either backend; y is one memcpy.
!>   nml_forward_view xt(nf, n) -> pointer yt(nt, n) into the model's own output: no copy at all;
!>                    read-only, valid until the next call on the same model or nml_free.
!> Errors never stop the program: each routine returns status /= 0 and, if present, errmsg.
module nudgeml_torch
  use, intrinsic :: iso_c_binding, only: c_char, c_double, c_float, c_int, c_int64_t, c_ptr, &
       c_null_char, c_null_ptr, c_associated, c_loc, c_f_pointer
  implicit none
  private

  public :: nml_model, nml_block, nml_manifest
  public :: nml_read_manifest, nml_load, nml_load_dir, nml_free
  public :: nml_forward, nml_forward_t, nml_forward_view
  public :: nml_set_num_threads, nml_get_num_threads, nml_is_loaded

  integer, parameter, public :: NML_OK = 0
  integer, parameter, public :: NML_ERR_IO = 1, NML_ERR_FORMAT = 2, NML_ERR_SHAPE = 3, &
       NML_ERR_TORCH = 4, NML_ERR_ARG = 5
  integer, parameter, public :: NML_BACKEND_AUTO = 0, NML_BACKEND_TORCHSCRIPT = 1, NML_BACKEND_AOTI = 2
  integer, parameter, public :: NML_DEVICE_CPU = 0, NML_DEVICE_CUDA = 1
  integer, parameter, public :: NML_NAME_LEN = 32, NML_PATH_LEN = 4096

  !> A loaded model; n_features/n_targets are checked on every call when known (> 0).
  type :: nml_model
     type(c_ptr) :: handle = c_null_ptr
     integer :: n_features = 0
     integer :: n_targets = 0
     integer :: backend = NML_BACKEND_TORCHSCRIPT
  end type nml_model

  type :: nml_block
     character(len=NML_NAME_LEN) :: name = ''
     integer :: levels = 0
  end type nml_block

  !> The manifest (model.json), validated by the shim as docs/model-format.md says.
  type :: nml_manifest
     integer :: n_features = 0, n_targets = 0, n_levels = 0
     type(nml_block), allocatable :: features(:), targets(:)
     real(c_double), allocatable :: levels(:)         ! Pa, surface first
     real(c_double), allocatable :: feature_min(:), feature_max(:)
     real(c_double), allocatable :: target_min(:), target_max(:)
     real(c_double) :: margin = 0.0_c_double
     character(len=NML_PATH_LEN) :: torchscript_path = '', aoti_path = ''
  end type nml_manifest

  interface
     function c_last_error(buf, buflen) bind(C, name='nudgeml_last_error') result(n)
       import :: c_char, c_int64_t
       character(kind=c_char), intent(out) :: buf(*)
       integer(c_int64_t), value :: buflen
       integer(c_int64_t) :: n
     end function c_last_error

     function c_set_num_threads(n) bind(C, name='nudgeml_set_num_threads') result(st)
       import :: c_int
       integer(c_int), value :: n
       integer(c_int) :: st
     end function c_set_num_threads

     function c_get_num_threads() bind(C, name='nudgeml_get_num_threads') result(n)
       import :: c_int
       integer(c_int) :: n
     end function c_get_num_threads

     function c_model_load(path, backend, device, device_index, num_threads, nf, nt, handle) &
          bind(C, name='nudgeml_model_load') result(st)
       import :: c_char, c_int, c_int64_t, c_ptr
       character(kind=c_char), intent(in) :: path(*)
       integer(c_int), value :: backend, device, device_index, num_threads
       integer(c_int64_t), value :: nf, nt
       type(c_ptr), intent(out) :: handle
       integer(c_int) :: st
     end function c_model_load

     subroutine c_model_free(handle) bind(C, name='nudgeml_model_free')
       import :: c_ptr
       type(c_ptr), value :: handle
     end subroutine c_model_free

     function c_model_forward(handle, x, n, nf, sx_col, sx_feat, strided, y, nt, sy_col, sy_targ) &
          bind(C, name='nudgeml_model_forward') result(st)
       import :: c_int, c_int64_t, c_ptr
       type(c_ptr), value :: handle, x, y
       integer(c_int64_t), value :: n, nf, sx_col, sx_feat, nt, sy_col, sy_targ
       integer(c_int), value :: strided
       integer(c_int) :: st
     end function c_model_forward

     function c_model_forward_view(handle, x, n, nf, sx_col, sx_feat, strided, nt, y) &
          bind(C, name='nudgeml_model_forward_view') result(st)
       import :: c_int, c_int64_t, c_ptr
       type(c_ptr), value :: handle, x
       integer(c_int64_t), value :: n, nf, sx_col, sx_feat, nt
       integer(c_int), value :: strided
       type(c_ptr), intent(out) :: y
       integer(c_int) :: st
     end function c_model_forward_view

     function c_manifest_read(path, handle) bind(C, name='nudgeml_manifest_read') result(st)
       import :: c_char, c_int, c_ptr
       character(kind=c_char), intent(in) :: path(*)
       type(c_ptr), intent(out) :: handle
       integer(c_int) :: st
     end function c_manifest_read

     subroutine c_manifest_free(handle) bind(C, name='nudgeml_manifest_free')
       import :: c_ptr
       type(c_ptr), value :: handle
     end subroutine c_manifest_free

     function c_manifest_count(handle, which) bind(C, name='nudgeml_manifest_count') result(n)
       import :: c_int, c_int64_t, c_ptr
       type(c_ptr), value :: handle
       integer(c_int), value :: which
       integer(c_int64_t) :: n
     end function c_manifest_count

     function c_manifest_block(handle, kind, idx, name, name_len, levels) &
          bind(C, name='nudgeml_manifest_block') result(st)
       import :: c_char, c_int, c_int64_t, c_ptr
       type(c_ptr), value :: handle
       integer(c_int), value :: kind
       integer(c_int64_t), value :: idx, name_len
       character(kind=c_char), intent(out) :: name(*)
       integer(c_int64_t), intent(out) :: levels
       integer(c_int) :: st
     end function c_manifest_block

     function c_manifest_array(handle, which, values, n) bind(C, name='nudgeml_manifest_array') result(st)
       import :: c_double, c_int, c_int64_t, c_ptr
       type(c_ptr), value :: handle
       integer(c_int), value :: which
       real(c_double), intent(out) :: values(*)
       integer(c_int64_t), value :: n
       integer(c_int) :: st
     end function c_manifest_array

     function c_manifest_margin(handle) bind(C, name='nudgeml_manifest_margin') result(m)
       import :: c_double, c_ptr
       type(c_ptr), value :: handle
       real(c_double) :: m
     end function c_manifest_margin

     function c_manifest_artifact(handle, backend, buf, buflen) &
          bind(C, name='nudgeml_manifest_artifact') result(st)
       import :: c_char, c_int, c_int64_t, c_ptr
       type(c_ptr), value :: handle
       integer(c_int), value :: backend
       character(kind=c_char), intent(out) :: buf(*)
       integer(c_int64_t), value :: buflen
       integer(c_int) :: st
     end function c_manifest_artifact
  end interface

contains

  ! ---------------------------------------------------------------------------------------------
  ! helpers
  ! ---------------------------------------------------------------------------------------------

  !> C string (NUL-terminated char array) -> Fortran string, blank padded.
  subroutine from_c_string(buf, out)
    character(kind=c_char), intent(in) :: buf(:)
    character(len=*), intent(out) :: out
    integer :: i
    out = ''
    do i = 1, min(size(buf), len(out))
       if (buf(i) == c_null_char) exit
       out(i:i) = buf(i)
    end do
  end subroutine from_c_string

  !> Store the shim's last error (prefixed) into errmsg, if present.
  subroutine fetch_error(errmsg, prefix)
    character(len=*), intent(out), optional :: errmsg
    character(len=*), intent(in) :: prefix
    character(kind=c_char) :: buf(2048)
    character(len=2048) :: text
    integer(c_int64_t) :: n
    if (.not. present(errmsg)) return
    n = c_last_error(buf, int(size(buf), c_int64_t))
    call from_c_string(buf, text)
    if (n == 0) text = 'unknown error'
    errmsg = prefix // trim(text)
  end subroutine fetch_error

  subroutine set_error(errmsg, text)
    character(len=*), intent(out), optional :: errmsg
    character(len=*), intent(in) :: text
    if (present(errmsg)) errmsg = text
  end subroutine set_error

  function itoa(i) result(s)
    integer, intent(in) :: i
    character(len=:), allocatable :: s
    character(len=24) :: buf
    write (buf, '(i0)') i
    s = trim(buf)
  end function itoa

  logical function nml_is_loaded(model)
    type(nml_model), intent(in) :: model
    nml_is_loaded = c_associated(model%handle)
  end function nml_is_loaded

  ! ---------------------------------------------------------------------------------------------
  ! threads
  ! ---------------------------------------------------------------------------------------------

  !> libtorch intra-op threads for models loaded with num_threads = 0 (0 = leave libtorch alone).
  subroutine nml_set_num_threads(n, status)
    integer, intent(in) :: n
    integer, intent(out), optional :: status
    integer :: st
    st = c_set_num_threads(int(n, c_int))
    if (present(status)) status = st
  end subroutine nml_set_num_threads

  integer function nml_get_num_threads()
    nml_get_num_threads = c_get_num_threads()
  end function nml_get_num_threads

  ! ---------------------------------------------------------------------------------------------
  ! manifest
  ! ---------------------------------------------------------------------------------------------

  !> Read and validate model.json (path to the file, or to the model directory).
  subroutine nml_read_manifest(path, man, status, errmsg)
    character(len=*), intent(in) :: path
    type(nml_manifest), intent(out) :: man
    integer, intent(out) :: status
    character(len=*), intent(out), optional :: errmsg
    type(c_ptr) :: h
    integer :: i
    integer(c_int64_t) :: lev
    character(kind=c_char) :: name(NML_NAME_LEN + 1), pbuf(NML_PATH_LEN + 1)

    name = c_null_char
    pbuf = c_null_char
    status = c_manifest_read(trim(path) // c_null_char, h)
    if (status /= NML_OK) then
       call fetch_error(errmsg, 'nudgeml: ')
       return
    end if
    man%n_features = int(c_manifest_count(h, 0_c_int))
    man%n_targets = int(c_manifest_count(h, 1_c_int))
    man%n_levels = int(c_manifest_count(h, 4_c_int))
    allocate (man%features(c_manifest_count(h, 2_c_int)), man%targets(c_manifest_count(h, 3_c_int)))
    do i = 1, size(man%features)
       status = c_manifest_block(h, 0_c_int, int(i - 1, c_int64_t), name, int(size(name), c_int64_t), lev)
       if (status /= NML_OK) exit
       call from_c_string(name, man%features(i)%name)
       man%features(i)%levels = int(lev)
    end do
    do i = 1, size(man%targets)
       if (status /= NML_OK) exit
       status = c_manifest_block(h, 1_c_int, int(i - 1, c_int64_t), name, int(size(name), c_int64_t), lev)
       call from_c_string(name, man%targets(i)%name)
       man%targets(i)%levels = int(lev)
    end do
    allocate (man%levels(man%n_levels), man%feature_min(man%n_features), man%feature_max(man%n_features), &
         man%target_min(man%n_targets), man%target_max(man%n_targets))
    if (status == NML_OK) status = c_manifest_array(h, 0_c_int, man%levels, int(man%n_levels, c_int64_t))
    if (status == NML_OK) status = c_manifest_array(h, 1_c_int, man%feature_min, int(man%n_features, c_int64_t))
    if (status == NML_OK) status = c_manifest_array(h, 2_c_int, man%feature_max, int(man%n_features, c_int64_t))
    if (status == NML_OK) status = c_manifest_array(h, 3_c_int, man%target_min, int(man%n_targets, c_int64_t))
    if (status == NML_OK) status = c_manifest_array(h, 4_c_int, man%target_max, int(man%n_targets, c_int64_t))
    man%margin = c_manifest_margin(h)
    if (status == NML_OK) status = c_manifest_artifact(h, int(NML_BACKEND_TORCHSCRIPT, c_int), pbuf, &
         int(size(pbuf), c_int64_t))
    call from_c_string(pbuf, man%torchscript_path)
    if (status == NML_OK) status = c_manifest_artifact(h, int(NML_BACKEND_AOTI, c_int), pbuf, &
         int(size(pbuf), c_int64_t))
    call from_c_string(pbuf, man%aoti_path)
    if (status /= NML_OK) call fetch_error(errmsg, 'nudgeml: ' // trim(path) // ': ')
    call c_manifest_free(h)
  end subroutine nml_read_manifest

  ! ---------------------------------------------------------------------------------------------
  ! models
  ! ---------------------------------------------------------------------------------------------

  !> Load a TorchScript file or an AOTI package. With n_features and n_targets, the shim runs one
  !> probe column and refuses a model whose sizes disagree. num_threads > 0 fixes libtorch's
  !> intra-op threads for this model's calls (use 1 when calling from inside OpenMP regions).
  subroutine nml_load(model, path, status, errmsg, backend, device, device_index, num_threads, &
       n_features, n_targets)
    type(nml_model), intent(inout) :: model
    character(len=*), intent(in) :: path
    integer, intent(out) :: status
    character(len=*), intent(out), optional :: errmsg
    integer, intent(in), optional :: backend, device, device_index, num_threads, n_features, n_targets
    integer :: b, d, di, nth, nf, nt
    type(c_ptr) :: h

    call nml_free(model)
    b = NML_BACKEND_AUTO
    d = NML_DEVICE_CPU
    di = 0
    nth = 0
    nf = 0
    nt = 0
    if (present(backend)) b = backend
    if (present(device)) d = device
    if (present(device_index)) di = device_index
    if (present(num_threads)) nth = num_threads
    if (present(n_features)) nf = n_features
    if (present(n_targets)) nt = n_targets
    status = c_model_load(trim(path) // c_null_char, int(b, c_int), int(d, c_int), int(di, c_int), &
         int(nth, c_int), int(nf, c_int64_t), int(nt, c_int64_t), h)
    if (status /= NML_OK) then
       call fetch_error(errmsg, 'nudgeml: ')
       return
    end if
    model%handle = h
    model%n_features = nf
    model%n_targets = nt
    if (b == NML_BACKEND_AUTO) then
       model%backend = NML_BACKEND_TORCHSCRIPT
       if (len_trim(path) >= 4) then
          if (path(len_trim(path) - 3:len_trim(path)) == '.pt2') model%backend = NML_BACKEND_AOTI
       end if
    else
       model%backend = b
    end if
  end subroutine nml_load

  !> Read <dir>/model.json, then load its TorchScript (default) or AOTI artifact, probed against
  !> the manifest's n_features/n_targets.
  subroutine nml_load_dir(model, dir, man, status, errmsg, backend, device, device_index, num_threads)
    type(nml_model), intent(inout) :: model
    character(len=*), intent(in) :: dir
    type(nml_manifest), intent(out) :: man
    integer, intent(out) :: status
    character(len=*), intent(out), optional :: errmsg
    integer, intent(in), optional :: backend, device, device_index, num_threads
    integer :: b
    b = NML_BACKEND_TORCHSCRIPT
    if (present(backend)) b = backend
    if (b /= NML_BACKEND_TORCHSCRIPT .and. b /= NML_BACKEND_AOTI) then
       status = NML_ERR_ARG
       call set_error(errmsg, 'nudgeml: nml_load_dir needs backend NML_BACKEND_TORCHSCRIPT or NML_BACKEND_AOTI')
       return
    end if
    call nml_read_manifest(dir, man, status, errmsg)
    if (status /= NML_OK) return
    if (b == NML_BACKEND_AOTI) then
       call nml_load(model, man%aoti_path, status, errmsg, b, device, device_index, num_threads, &
            man%n_features, man%n_targets)
    else
       call nml_load(model, man%torchscript_path, status, errmsg, b, device, device_index, num_threads, &
            man%n_features, man%n_targets)
    end if
  end subroutine nml_load_dir

  subroutine nml_free(model)
    type(nml_model), intent(inout) :: model
    if (c_associated(model%handle)) call c_model_free(model%handle)
    model%handle = c_null_ptr
    model%n_features = 0
    model%n_targets = 0
  end subroutine nml_free

  !> Shared checks of a batch: loaded model and, when known, the feature/target counts.
  subroutine check_dims(model, nf, nt, status, errmsg)
    type(nml_model), intent(in) :: model
    integer, intent(in) :: nf, nt
    integer, intent(out) :: status
    character(len=*), intent(out), optional :: errmsg
    status = NML_OK
    if (.not. c_associated(model%handle)) then
       status = NML_ERR_ARG
       call set_error(errmsg, 'nudgeml: model not loaded')
    else if (model%n_features > 0 .and. nf /= model%n_features) then
       status = NML_ERR_SHAPE
       call set_error(errmsg, 'nudgeml: input has ' // itoa(nf) // ' features, model expects ' // &
            itoa(model%n_features))
    else if (model%n_targets > 0 .and. nt /= model%n_targets) then
       status = NML_ERR_SHAPE
       call set_error(errmsg, 'nudgeml: output has room for ' // itoa(nt) // ' targets, model gives ' // &
            itoa(model%n_targets))
    end if
  end subroutine check_dims

  !> Columns first: x(n, n_features) -> y(n, n_targets).
  subroutine nml_forward(model, x, y, status, errmsg, strided_view)
    type(nml_model), intent(inout) :: model
    real(c_float), intent(in), target, contiguous :: x(:, :)
    real(c_float), intent(out), target, contiguous :: y(:, :)
    integer, intent(out) :: status
    character(len=*), intent(out), optional :: errmsg
    logical, intent(in), optional :: strided_view
    integer(c_int64_t) :: n
    integer(c_int) :: strided
    strided = 0
    if (present(strided_view)) then
       if (strided_view) strided = 1
    end if
    if (size(y, 1) /= size(x, 1)) then
       status = NML_ERR_SHAPE
       call set_error(errmsg, 'nudgeml: x has ' // itoa(size(x, 1)) // ' columns, y ' // itoa(size(y, 1)))
       return
    end if
    call check_dims(model, size(x, 2), size(y, 2), status, errmsg)
    if (status /= NML_OK) return
    n = size(x, 1, kind=c_int64_t)
    status = c_model_forward(model%handle, c_loc(x), n, size(x, 2, kind=c_int64_t), 1_c_int64_t, n, strided, &
         c_loc(y), size(y, 2, kind=c_int64_t), 1_c_int64_t, n)
    if (status /= NML_OK) call fetch_error(errmsg, 'nudgeml: ')
  end subroutine nml_forward

  !> Features first (the model's own layout): xt(n_features, n) -> yt(n_targets, n).
  subroutine nml_forward_t(model, xt, yt, status, errmsg)
    type(nml_model), intent(inout) :: model
    real(c_float), intent(in), target, contiguous :: xt(:, :)
    real(c_float), intent(out), target, contiguous :: yt(:, :)
    integer, intent(out) :: status
    character(len=*), intent(out), optional :: errmsg
    if (size(yt, 2) /= size(xt, 2)) then
       status = NML_ERR_SHAPE
       call set_error(errmsg, 'nudgeml: xt has ' // itoa(size(xt, 2)) // ' columns, yt ' // itoa(size(yt, 2)))
       return
    end if
    call check_dims(model, size(xt, 1), size(yt, 1), status, errmsg)
    if (status /= NML_OK) return
    status = c_model_forward(model%handle, c_loc(xt), size(xt, 2, kind=c_int64_t), size(xt, 1, kind=c_int64_t), &
         size(xt, 1, kind=c_int64_t), 1_c_int64_t, 0_c_int, c_loc(yt), size(yt, 1, kind=c_int64_t), &
         size(yt, 1, kind=c_int64_t), 1_c_int64_t)
    if (status /= NML_OK) call fetch_error(errmsg, 'nudgeml: ')
  end subroutine nml_forward_t

  !> Features first, output not copied: yt(n_targets, n) points into the model's output tensor
  !> (read it, do not write it), valid until the next call on this model or nml_free.
  subroutine nml_forward_view(model, xt, yt, status, errmsg)
    type(nml_model), intent(inout) :: model
    real(c_float), intent(in), target, contiguous :: xt(:, :)
    real(c_float), pointer, intent(out) :: yt(:, :)
    integer, intent(out) :: status
    character(len=*), intent(out), optional :: errmsg
    type(c_ptr) :: p
    nullify (yt)
    if (model%n_targets < 1) then
       status = NML_ERR_ARG
       call set_error(errmsg, 'nudgeml: nml_forward_view needs a model loaded with n_targets')
       return
    end if
    call check_dims(model, size(xt, 1), model%n_targets, status, errmsg)
    if (status /= NML_OK) return
    status = c_model_forward_view(model%handle, c_loc(xt), size(xt, 2, kind=c_int64_t), &
         size(xt, 1, kind=c_int64_t), size(xt, 1, kind=c_int64_t), 1_c_int64_t, 0_c_int, &
         int(model%n_targets, c_int64_t), p)
    if (status /= NML_OK) then
       call fetch_error(errmsg, 'nudgeml: ')
       return
    end if
    call c_f_pointer(p, yt, [model%n_targets, size(xt, 2)])
  end subroutine nml_forward_view

end module nudgeml_torch
