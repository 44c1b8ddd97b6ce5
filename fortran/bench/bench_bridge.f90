!> bench_bridge MODEL_DIR X_FILE N_COLUMNS REPEATS THREADS OUT_DIR
!> Times the bridge on one batch (the Python side, benchmarks/bridge.py, times the same model on
!> the same columns in the same run). For each backend and layout it prints one line
!>   RESULT <backend> <layout> <median ms> <min ms>
!> and writes the output of the features-first call to OUT_DIR/<backend>.f32 (row-major (n, nt))
!> so that the Python side can check it bit for bit. It also times a full LMDZ refresh
!> (nudgeml_lmdz_step: features from r8 (klon, klev) fields, model, guard) when the manifest is
!> LMDZ-shaped (u, v, t, q on klev levels).
program bench_bridge
  use, intrinsic :: iso_c_binding, only: c_double, c_float
  use, intrinsic :: iso_fortran_env, only: error_unit, output_unit
  use omp_lib, only: omp_get_wtime
  use nudgeml_torch
  use nudgeml_lmdz
  implicit none

  character(len=4096) :: dir, xfile, outdir, arg
  character(len=1024) :: msg
  integer :: n, repeats, threads, st, b, u
  real(c_float), allocatable, target :: x(:, :), xt(:, :), y(:, :), yt(:, :)
  type(nml_model) :: model
  type(nml_manifest) :: man
  character(len=12), parameter :: names(2) = [character(len=12) :: 'torchscript', 'aoti']

  call get_command_argument(1, dir)
  call get_command_argument(2, xfile)
  call get_command_argument(3, arg)
  read (arg, *) n
  call get_command_argument(4, arg)
  read (arg, *) repeats
  call get_command_argument(5, arg)
  read (arg, *) threads
  call get_command_argument(6, outdir)

  call nml_read_manifest(trim(dir), man, st, msg)
  if (st /= NML_OK) call die(msg)
  allocate (x(n, man%n_features), y(n, man%n_targets), yt(man%n_targets, n))
  open (newunit=u, file=trim(xfile), access='stream', form='unformatted', status='old', action='read')
  read (u) x
  close (u)
  xt = transpose(x)

  do b = 1, 2
     call nml_load_dir(model, trim(dir), man, st, msg, backend=b, num_threads=threads)
     if (st /= NML_OK) call die(msg)
     call time_layout(trim(names(b)), 'features_first', 1)
     open (newunit=u, file=trim(outdir) // '/' // trim(names(b)) // '.f32', access='stream', &
          form='unformatted', status='replace', action='write')
     write (u) yt
     close (u)
     call time_layout(trim(names(b)), 'view', 2)
     call time_layout(trim(names(b)), 'columns_first', 3)
     if (b == NML_BACKEND_TORCHSCRIPT) call time_layout(trim(names(b)), 'columns_first_strided', 4)
     call nml_free(model)
  end do
  call time_lmdz_refresh()

contains

  subroutine time_layout(backend, layout, which)
    character(len=*), intent(in) :: backend, layout
    integer, intent(in) :: which
    real(c_double) :: t(repeats), t0
    real(c_float), pointer :: yv(:, :)
    integer :: r
    do r = -2, repeats      ! three warm-up calls (TorchScript's profiling executor settles)
       t0 = omp_get_wtime()
       select case (which)
       case (1)
          call nml_forward_t(model, xt, yt, st, msg)
       case (2)
          call nml_forward_view(model, xt, yv, st, msg)
       case (3)
          call nml_forward(model, x, y, st, msg)
       case (4)
          call nml_forward(model, x, y, st, msg, strided_view=.true.)
       end select
       if (st /= NML_OK) call die(msg)
       if (r >= 1) t(r) = omp_get_wtime() - t0
    end do
    write (output_unit, '(a, 2(1x, f10.3))') 'RESULT ' // backend // ' ' // layout, &
         1.0e3_c_double * median(t), 1.0e3_c_double * minval(t)
  end subroutine time_layout

  subroutine time_lmdz_refresh()
    integer :: klev, k, j, r, ierr
    real(c_double), allocatable :: f(:, :, :), paprs(:, :), zero(:, :), d_u(:, :), d_v(:, :)
    real(c_double) :: t(repeats), t0
    klev = man%n_levels
    if (size(man%features) /= 4 .or. man%n_features /= 4 * klev) then
       write (output_unit, '(a)') 'SKIP lmdz_refresh (manifest is not u, v, t, q on klev levels)'
       return
    end if
    allocate (f(n, klev, 4), paprs(n, klev + 1), zero(n, klev), d_u(n, klev), d_v(n, klev))
    do j = 1, 4
       do k = 1, klev
          f(:, k, j) = real(x(:, (j - 1) * klev + k), c_double)
       end do
    end do
    paprs = 1.0e5_c_double
    zero = 0.0_c_double
    call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(dir), n, klev, 900.0_c_double, ierr, msg, &
         torch_threads=threads)
    if (ierr /= 0) call die(msg)
    do r = -2, repeats
       t0 = omp_get_wtime()
       ! itap = 1 each time: every call is a refresh (features, model, guard)
       call nudgeml_lmdz_step(n, klev, 1, 900.0_c_double, f(:, :, 1), f(:, :, 2), f(:, :, 3), f(:, :, 4), &
            paprs, f(:, :, 1), zero, zero, d_u, d_v, ierr, msg)
       if (ierr /= 0) call die(msg)
       if (r >= 1) t(r) = omp_get_wtime() - t0
    end do
    write (output_unit, '(a, 2(1x, f10.3))') 'RESULT torchscript lmdz_refresh', &
         1.0e3_c_double * median(t), 1.0e3_c_double * minval(t)
    call nudgeml_lmdz_final()
  end subroutine time_lmdz_refresh

  real(c_double) function median(v)
    real(c_double), intent(in) :: v(:)
    real(c_double) :: s(size(v)), tmp
    integer :: i, j
    s = v
    do i = 2, size(s)        ! insertion sort: a handful of values
       tmp = s(i)
       j = i - 1
       do while (j >= 1)
          if (s(j) <= tmp) exit
          s(j + 1) = s(j)
          j = j - 1
       end do
       s(j + 1) = tmp
    end do
    if (mod(size(s), 2) == 1) then
       median = s((size(s) + 1) / 2)
    else
       median = 0.5_c_double * (s(size(s) / 2) + s(size(s) / 2 + 1))
    end if
  end function median

  subroutine die(text)
    character(len=*), intent(in) :: text
    write (error_unit, '(a)') trim(text)
    stop 2
  end subroutine die

end program bench_bridge
