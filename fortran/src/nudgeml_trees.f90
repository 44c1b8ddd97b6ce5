!> Fortran interface to a compiled tree ensemble (model_trees.so of an exported xgboost model,
!> written by nudgeml.trees): no libtorch. The library is opened at run time (dlopen), so the model
!> directory is a run-time choice as with the libtorch bridge; link the program with -ldl.
!>
!> Contract (docs/model-format.md): xt(n_features, n) float32 in physical units, features first
!> (= the C row-major (n, n_features) the library reads, so no copy), NaN for a missing value;
!> yt(n_targets, n) the tendencies in m s-2. The guard is the caller's, as for every model kind.
!> Errors never stop the program: each routine returns status /= 0 and, if present, errmsg.
module nudgeml_trees
  use, intrinsic :: iso_c_binding, only: c_char, c_float, c_funptr, c_int, c_int64_t, c_ptr, &
       c_null_char, c_null_ptr, c_associated, c_f_procpointer
  implicit none
  private

  public :: nml_trees, nml_trees_load, nml_trees_forward_t, nml_trees_free

  integer, parameter, public :: NML_TREES_OK = 0, NML_TREES_ERR_IO = 1, NML_TREES_ERR_SHAPE = 3, &
       NML_TREES_ERR_CALL = 4
  character(len=*), parameter, public :: NML_TREES_LIBRARY = 'model_trees.so'  ! nudgeml.trees.LIBRARY_NAME
  integer(c_int), parameter :: RTLD_NOW = 2  ! glibc's value; RTLD_LOCAL (0): the library's symbols stay its own

  abstract interface
     function predict_fn(n, x, y) bind(C) result(st)
       import :: c_float, c_int, c_int64_t
       integer(c_int64_t), value :: n
       real(c_float), intent(in) :: x(*)
       real(c_float), intent(out) :: y(*)
       integer(c_int) :: st
     end function predict_fn
     function count_fn() bind(C) result(n)
       import :: c_int64_t
       integer(c_int64_t) :: n
     end function count_fn
  end interface

  interface
     function c_dlopen(path, mode) bind(C, name='dlopen') result(handle)
       import :: c_char, c_int, c_ptr
       character(kind=c_char), intent(in) :: path(*)
       integer(c_int), value :: mode
       type(c_ptr) :: handle
     end function c_dlopen
     function c_dlsym(handle, name) bind(C, name='dlsym') result(fn)
       import :: c_char, c_funptr, c_ptr
       type(c_ptr), value :: handle
       character(kind=c_char), intent(in) :: name(*)
       type(c_funptr) :: fn
     end function c_dlsym
     function c_dlclose(handle) bind(C, name='dlclose') result(st)
       import :: c_int, c_ptr
       type(c_ptr), value :: handle
       integer(c_int) :: st
     end function c_dlclose
  end interface

  !> An opened library; n_features/n_targets are the library's own and checked on every call.
  type :: nml_trees
     type(c_ptr) :: handle = c_null_ptr
     procedure(predict_fn), pointer, nopass :: predict => null()
     integer :: n_features = 0
     integer :: n_targets = 0
  end type nml_trees

contains

  !> Open model_dir/model_trees.so; with n_features/n_targets, reject a library of another shape.
  subroutine nml_trees_load(model_dir, trees, status, errmsg, n_features, n_targets)
    character(len=*), intent(in) :: model_dir
    type(nml_trees), intent(inout) :: trees
    integer, intent(out) :: status
    character(len=*), intent(out), optional :: errmsg
    integer, intent(in), optional :: n_features, n_targets
    character(len=:), allocatable :: path
    type(c_funptr) :: fn_predict, fn_nf, fn_nt
    procedure(count_fn), pointer :: count

    call nml_trees_free(trees)
    path = trim(model_dir) // '/' // NML_TREES_LIBRARY
    trees%handle = c_dlopen(path // c_null_char, RTLD_NOW)
    if (.not. c_associated(trees%handle)) then
       call fail(NML_TREES_ERR_IO, path // ': cannot open the compiled tree library')
       return
    end if
    fn_predict = c_dlsym(trees%handle, 'nudgeml_trees_predict' // c_null_char)
    fn_nf = c_dlsym(trees%handle, 'nudgeml_trees_n_features' // c_null_char)
    fn_nt = c_dlsym(trees%handle, 'nudgeml_trees_n_targets' // c_null_char)
    if (.not. (c_associated(fn_predict) .and. c_associated(fn_nf) .and. c_associated(fn_nt))) then
       call nml_trees_free(trees)
       call fail(NML_TREES_ERR_IO, path // ': not a nudgeml tree library (nudgeml_trees_* missing)')
       return
    end if
    call c_f_procpointer(fn_predict, trees%predict)
    call c_f_procpointer(fn_nf, count)
    trees%n_features = int(count())
    call c_f_procpointer(fn_nt, count)
    trees%n_targets = int(count())
    if (present(n_features)) then
       if (n_features /= trees%n_features) then
          call fail(NML_TREES_ERR_SHAPE, path // ': library reads ' // itoa(trees%n_features) // &
               ' features, caller has ' // itoa(n_features))
          call nml_trees_free(trees)
          return
       end if
    end if
    if (present(n_targets)) then
       if (n_targets /= trees%n_targets) then
          call fail(NML_TREES_ERR_SHAPE, path // ': library writes ' // itoa(trees%n_targets) // &
               ' targets, caller expects ' // itoa(n_targets))
          call nml_trees_free(trees)
          return
       end if
    end if
    status = NML_TREES_OK
    if (present(errmsg)) errmsg = ''

  contains
    subroutine fail(code, msg)
      integer, intent(in) :: code
      character(len=*), intent(in) :: msg
      status = code
      if (present(errmsg)) errmsg = msg
    end subroutine fail
  end subroutine nml_trees_load

  !> yt(:, i) = model(xt(:, i)) for every column i; features first, no copy.
  subroutine nml_trees_forward_t(trees, xt, yt, status, errmsg)
    type(nml_trees), intent(in) :: trees
    real(c_float), intent(in), contiguous :: xt(:, :)
    real(c_float), intent(out), contiguous :: yt(:, :)
    integer, intent(out) :: status
    character(len=*), intent(out), optional :: errmsg

    if (.not. c_associated(trees%handle)) then
       status = NML_TREES_ERR_IO
       if (present(errmsg)) errmsg = 'nml_trees_forward_t: no library loaded'
       return
    end if
    if (size(xt, 1) /= trees%n_features .or. size(yt, 1) /= trees%n_targets .or. size(xt, 2) /= size(yt, 2)) then
       status = NML_TREES_ERR_SHAPE
       if (present(errmsg)) errmsg = 'nml_trees_forward_t: xt is (' // itoa(size(xt, 1)) // ', ' // itoa(size(xt, 2)) // &
            '), yt is (' // itoa(size(yt, 1)) // ', ' // itoa(size(yt, 2)) // '); the library maps ' // &
            itoa(trees%n_features) // ' features to ' // itoa(trees%n_targets) // ' targets'
       return
    end if
    if (trees%predict(int(size(xt, 2), c_int64_t), xt, yt) /= 0) then
       status = NML_TREES_ERR_CALL
       if (present(errmsg)) errmsg = 'nml_trees_forward_t: nudgeml_trees_predict failed'
       return
    end if
    status = NML_TREES_OK
    if (present(errmsg)) errmsg = ''
  end subroutine nml_trees_forward_t

  subroutine nml_trees_free(trees)
    type(nml_trees), intent(inout) :: trees
    integer(c_int) :: st
    if (c_associated(trees%handle)) st = c_dlclose(trees%handle)
    trees%handle = c_null_ptr
    trees%predict => null()
    trees%n_features = 0
    trees%n_targets = 0
  end subroutine nml_trees_free

  pure function itoa(i) result(s)
    integer, intent(in) :: i
    character(len=:), allocatable :: s
    character(len=24) :: buf
    write (buf, '(i0)') i
    s = trim(buf)
  end function itoa
end module nudgeml_trees
