!> test_bridge FIXTURES (torchscript|aoti)
!> Feeds the columns that make_fixtures.py fed to the same model in Python and requires the
!> outputs to be bit for bit identical, for every layout of the bridge and several batch sizes;
!> then checks the error paths and that libtorch leaves the caller's OpenMP setting alone.
program test_bridge
  use, intrinsic :: iso_c_binding, only: c_float, c_int32_t
  use, intrinsic :: iso_fortran_env, only: error_unit, output_unit
  use omp_lib, only: omp_get_max_threads, omp_set_num_threads
  use nudgeml_torch
  implicit none

  character(len=4096) :: fixtures, backend_name
  character(len=1024) :: msg
  type(nml_model) :: model
  type(nml_manifest) :: man
  real(c_float), allocatable :: x(:, :), xt(:, :), y(:, :), yt(:, :), ref(:, :), ref1(:, :), ref7(:, :)
  real(c_float), allocatable :: y1(:, :), y7(:, :), x7(:, :)
  real(c_float), pointer :: yv(:, :)
  integer :: n, nf, nt, st, backend, u, rep, npass, nfail

  npass = 0
  nfail = 0
  call get_command_argument(1, fixtures)
  call get_command_argument(2, backend_name)
  select case (trim(backend_name))
  case ('torchscript')
     backend = NML_BACKEND_TORCHSCRIPT
  case ('aoti')
     backend = NML_BACKEND_AOTI
  case default
     write (error_unit, '(a)') 'usage: test_bridge FIXTURES torchscript|aoti'
     error stop 1
  end select

  open (newunit=u, file=trim(fixtures) // '/bridge/meta.txt', status='old', action='read')
  read (u, *) n, nf, nt
  close (u)
  allocate (x(n, nf), ref(n, nt), ref1(1, nt), ref7(7, nt))
  call read_f32(trim(fixtures) // '/bridge/x.f32', x)
  call read_f32(trim(fixtures) // '/bridge/ref_' // trim(backend_name) // '_' // itoa(n) // '.f32', ref)
  call read_f32(trim(fixtures) // '/bridge/ref_' // trim(backend_name) // '_1.f32', ref1)
  call read_f32(trim(fixtures) // '/bridge/ref_' // trim(backend_name) // '_7.f32', ref7)
  xt = transpose(x)

  call nml_load_dir(model, trim(fixtures) // '/mlp33', man, st, msg, backend=backend, num_threads=2)
  call check(st == NML_OK, 'load ' // trim(backend_name) // ': ' // trim(msg))
  if (st /= NML_OK) call finish()
  call check(man%n_features == nf .and. man%n_targets == nt, 'manifest sizes')
  call check(size(man%levels) == 8 .and. man%levels(1) > man%levels(8), 'levels surface first')

  ! Columns first, several calls: the executor's warm-up must not change a bit.
  allocate (y(n, nt))
  do rep = 1, 3
     y = -1.0
     call nml_forward(model, x, y, st, msg)
     call check(st == NML_OK, 'nml_forward: ' // trim(msg))
     call check(same_bits(y, ref), 'nml_forward x(n, nf) == Python, call ' // itoa(rep))
  end do

  ! Features first (the model's own layout).
  allocate (yt(nt, n))
  call nml_forward_t(model, xt, yt, st, msg)
  call check(st == NML_OK, 'nml_forward_t: ' // trim(msg))
  call check(same_bits(transpose(yt), ref), 'nml_forward_t xt(nf, n) == Python')

  ! No copy of the output.
  call nml_forward_view(model, xt, yv, st, msg)
  call check(st == NML_OK .and. associated(yv), 'nml_forward_view: ' // trim(msg))
  if (associated(yv)) call check(same_bits(transpose(yv), ref), 'nml_forward_view == Python')

  ! Other batch sizes, including an array section (not contiguous: the compiler passes a copy).
  allocate (y1(1, nt), y7(7, nt))
  call nml_forward(model, x(1:1, :), y1, st, msg)
  call check(st == NML_OK .and. same_bits(y1, ref1), 'one column == Python ' // trim(msg))
  call nml_forward(model, x(1:7, :), y7, st, msg)
  call check(st == NML_OK .and. same_bits(y7, ref7), 'x(1:7, :) section == Python ' // trim(msg))
  x7 = x(1:7, :)
  call nml_forward(model, x7, y7, st, msg)
  call check(st == NML_OK .and. same_bits(y7, ref7), '7 columns == Python ' // trim(msg))

  ! Opt-in strided view (TorchScript reads x in place): same values up to rounding, not always the
  ! same bits (BLAS takes other kernels for a transposed operand); AOTI ignores it and copies.
  call nml_forward(model, x7, y7, st, msg, strided_view=.true.)
  call check(st == NML_OK .and. maxval(abs(y7 - ref7)) <= 1.0e-5 * maxval(abs(ref7)), &
       'strided view within rounding of Python ' // trim(msg))
  if (backend == NML_BACKEND_AOTI) call check(same_bits(y7, ref7), 'AOTI ignores strided_view (bits equal)')

  ! libtorch must not change the thread count of the caller's next OpenMP region.
  call omp_set_num_threads(3)
  call nml_forward(model, x, y, st, msg)
  call check(omp_get_max_threads() == 3, 'OpenMP threads restored after a call (got ' // &
       itoa(omp_get_max_threads()) // ')')
  call omp_set_num_threads(2)

  ! Wrong sizes are refused with a message, before libtorch is reached.
  call nml_forward(model, x(:, 1:nf - 1), y, st, msg)
  call check(st == NML_ERR_SHAPE .and. index(msg, 'model expects ' // itoa(nf)) > 0, &
       'wrong feature count refused: ' // trim(msg))
  call nml_forward(model, x, y(:, 1:nt - 1), st, msg)
  call check(st == NML_ERR_SHAPE .and. index(msg, 'targets') > 0, 'wrong target count refused: ' // trim(msg))

  ! Without the manifest's sizes (n_features = 0), libtorch's own error comes back as a status.
  call nml_free(model)
  call nml_load(model, man%torchscript_path, st, msg, backend=NML_BACKEND_TORCHSCRIPT)
  call check(st == NML_OK, 'load without probe: ' // trim(msg))
  call nml_forward(model, x(:, 1:nf - 1), y, st, msg)
  call check(st == NML_ERR_TORCH .and. index(msg, 'libtorch') > 0, 'libtorch error reported: ' // trim(msg))
  call nml_free(model)

  call nml_forward(model, x, y, st, msg)
  call check(st == NML_ERR_ARG .and. index(msg, 'not loaded') > 0, 'freed model refused: ' // trim(msg))
  call nml_load(model, trim(fixtures) // '/no_such_file.pt', st, msg)
  call check(st == NML_ERR_IO .and. index(msg, 'no_such_file.pt') > 0 .and. .not. nml_is_loaded(model), &
       'missing file: ' // trim(msg))
  call nml_load(model, trim(fixtures) // '/bridge/meta.txt', st, msg, backend=NML_BACKEND_TORCHSCRIPT)
  call check(st == NML_ERR_FORMAT .and. index(msg, 'cannot load') > 0, 'not a model: ' // trim(msg))

  call finish()

contains

  subroutine finish()
    write (output_unit, '(a, i0, a, i0, a)') 'test_bridge ' // trim(backend_name) // ': ', npass, ' passed, ', &
         nfail, ' failed'
    if (nfail > 0) error stop 1
    stop
  end subroutine finish

  subroutine check(ok, what)
    logical, intent(in) :: ok
    character(len=*), intent(in) :: what
    if (ok) then
       npass = npass + 1
    else
       nfail = nfail + 1
       write (error_unit, '(a)') 'FAIL: ' // trim(what)
    end if
  end subroutine check

  logical function same_bits(a, b)
    real(c_float), intent(in) :: a(:, :), b(:, :)
    same_bits = all(shape(a) == shape(b))
    if (same_bits) same_bits = all(transfer(a, 0_c_int32_t, size(a)) == transfer(b, 0_c_int32_t, size(b)))
  end function same_bits

  subroutine read_f32(path, a)
    character(len=*), intent(in) :: path
    real(c_float), intent(out) :: a(:, :)
    integer :: unit
    open (newunit=unit, file=path, access='stream', form='unformatted', status='old', action='read')
    read (unit) a
    close (unit)
  end subroutine read_f32

  function itoa(i) result(s)
    integer, intent(in) :: i
    character(len=:), allocatable :: s
    character(len=24) :: buf
    write (buf, '(i0)') i
    s = trim(buf)
  end function itoa

end program test_bridge
