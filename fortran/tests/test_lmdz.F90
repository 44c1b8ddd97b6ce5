!> test_lmdz FIXTURES
!> Drives nudgeml_lmdz_step as LMDZ's physics would, over 49 steps of 900 s with a state that
!> changes every step, and compares d_u, d_v bit for bit with make_fixtures.py's reference:
!> the correction must be recomputed only at steps 1, 25 and 49 (6-hourly) from the state of
!> that step, guarded (clip + fallback to the mean tendency), and held in between. Then: a model
!> that outputs NaN falls back; two OpenMP threads with their own columns; the mean residual (the
!> model's mean passed at each step) with and without per-level gains; eddies only (row means removed,
!> the row sums reduced across two OpenMP threads as LMDZ's reduce_sum would); the mean mode; errors.
!> Built with -fdefault-real-8 like LMDZ.
program test_lmdz
  use, intrinsic :: iso_c_binding, only: c_double, c_int64_t
  use, intrinsic :: iso_fortran_env, only: error_unit, output_unit
  use omp_lib, only: omp_get_max_threads, omp_set_num_threads, omp_get_thread_num
  use nudgeml_lmdz
  implicit none

  character(len=4096) :: fixtures
  character(len=1024) :: msg
  integer :: klon, klev, nsteps, nref, ierr, npass, nfail
  real(c_double) :: dt
  real(c_double), allocatable :: s0(:, :, :), ds(:, :, :), p0(:, :), dp(:, :), dum(:, :), dvm(:, :)
  real(c_double), allocatable :: mmu(:, :), mmv(:, :), gains(:, :)   ! the model's mean, (klev, 2) gains
  integer, allocatable :: rows(:)                                     ! eddies only: each column's row
  integer :: nrows
  real(c_double), allocatable :: shared_sums(:)                       ! omp_row_sum's buffer (shared)
  integer, parameter :: PLAIN = 0, RESIDUAL = 1, GAINED = 2, EDDY = 3
  integer, parameter :: IU = 1, IV = 2, IT = 3, IQ = 4, IPL = 5

  npass = 0
  nfail = 0
  call get_command_argument(1, fixtures)
  call read_inputs()

  call run_case('torchscript_serial', '/mlp33', 'torchscript', 0, 2)
  call run_case('aoti_serial', '/mlp33', 'aoti', 0, 2)
  call run_case('nan_serial', '/nan33', 'torchscript', 0, 2)
  call run_case('torchscript_omp', '/mlp33', 'torchscript', 2, 1)
  call run_case('trees_serial', '/trees33', 'trees', 0, 2)
  call run_case('trees_omp', '/trees33', 'trees', 2, 1)
  call run_case('residual_serial', '/mlp33', 'torchscript', 0, 2, RESIDUAL)
  call run_case('gains_serial', '/mlp33', 'torchscript', 0, 2, GAINED)
  call run_case('gains_omp', '/mlp33', 'torchscript', 2, 1, GAINED)
  call run_case('eddy_serial', '/mlp33', 'torchscript', 0, 2, EDDY)
  call run_case('eddy_omp', '/mlp33', 'torchscript', 2, 1, EDDY)
  call mean_mode()
  call errors()

  write (output_unit, '(a, i0, a, i0, a)') 'test_lmdz: ', npass, ' passed, ', nfail, ' failed'
  if (nfail > 0) error stop 1

contains

  subroutine read_inputs()
    integer :: u
    real(c_double), allocatable :: buf(:)
    open (newunit=u, file=trim(fixtures) // '/lmdz/meta.txt', status='old', action='read')
    read (u, *) klon, klev, nsteps, dt, nref
    close (u)
    allocate (s0(klon, klev, 5), ds(klon, klev, 5), p0(klon, klev + 1), dp(klon, klev + 1))
    allocate (dum(klon, klev), dvm(klon, klev))
    allocate (buf(5 * klon * klev + klon * (klev + 1)))
    call read_f64(trim(fixtures) // '/lmdz/state0.f64', buf)
    s0 = reshape(buf(1:5 * klon * klev), [klon, klev, 5])
    p0 = reshape(buf(5 * klon * klev + 1:), [klon, klev + 1])
    call read_f64(trim(fixtures) // '/lmdz/dstate.f64', buf)
    ds = reshape(buf(1:5 * klon * klev), [klon, klev, 5])
    dp = reshape(buf(5 * klon * klev + 1:), [klon, klev + 1])
    deallocate (buf)
    allocate (buf(2 * klon * klev))
    call read_f64(trim(fixtures) // '/lmdz/mean.f64', buf)
    dum = reshape(buf(1:klon * klev), [klon, klev])
    dvm = reshape(buf(klon * klev + 1:), [klon, klev])
    allocate (mmu(klon, klev), mmv(klon, klev), gains(klev, 2))
    call read_f64(trim(fixtures) // '/lmdz/model_mean.f64', buf)
    mmu = reshape(buf(1:klon * klev), [klon, klev])
    mmv = reshape(buf(klon * klev + 1:), [klon, klev])
    deallocate (buf)
    allocate (buf(2 * klev))
    call read_f64(trim(fixtures) // '/lmdz/gains.f64', buf)
    gains = reshape(buf, [klev, 2])
    allocate (rows(klon))
    open (newunit=u, file=trim(fixtures) // '/lmdz/rows.txt', status='old', action='read')
    read (u, *) rows
    close (u)
    nrows = maxval(rows)
    allocate (shared_sums(nrows * klev * 2 + nrows))
  end subroutine read_inputs

  !> The eddies-only reduction over the threads of the enclosing parallel region (one thread outside
  !> one), as LMDZ's reduce_sum then bcast: every thread adds its partial sums to one buffer.
  subroutine omp_row_sum(a)
    real(c_double), intent(inout) :: a(:)
    !$omp barrier
    !$omp single
    shared_sums = 0.0_c_double
    !$omp end single
    !$omp critical (row_sum)
    shared_sums = shared_sums + a
    !$omp end critical (row_sum)
    !$omp barrier
    a = shared_sums
    !$omp barrier
  end subroutine omp_row_sum

  !> Run all steps over columns [i0, i1] on the calling thread; count mismatches with `expect`.
  subroutine drive(dir, backend, i0, i1, expect, torch_threads, variant, bad, counts, errtext)
    character(len=*), intent(in) :: dir, backend
    integer, intent(in) :: i0, i1, torch_threads, variant
    real(c_double), intent(in) :: expect(:, :, :, :)        ! (klon, klev, 2, windows)
    integer, intent(out) :: bad
    integer(c_int64_t), intent(out) :: counts(4)
    character(len=*), intent(out) :: errtext
    real(c_double), allocatable :: u(:, :), v(:, :), t(:, :), q(:, :), pl(:, :), pa(:, :), d_u(:, :), d_v(:, :)
    integer :: n, step, w, ierr
    character(len=1024) :: m

    bad = 0
    counts = 0
    errtext = ''
    n = i1 - i0 + 1
    allocate (u(n, klev), v(n, klev), t(n, klev), q(n, klev), pl(n, klev), pa(n, klev + 1), d_u(n, klev), d_v(n, klev))
    if (variant == GAINED) then
       call nudgeml_lmdz_init(NUDGEML_MODE_ML, dir, n, klev, dt, ierr, m, backend=backend, &
            torch_threads=torch_threads, gains=gains)
    else if (variant == EDDY) then
       call nudgeml_lmdz_init(NUDGEML_MODE_ML, dir, n, klev, dt, ierr, m, backend=backend, &
            torch_threads=torch_threads, gains=gains, rows=rows(i0:i1), nrows=nrows)
    else
       call nudgeml_lmdz_init(NUDGEML_MODE_ML, dir, n, klev, dt, ierr, m, backend=backend, &
            torch_threads=torch_threads)
    end if
    if (ierr /= 0) then
       errtext = 'init: ' // trim(m)
       bad = -1
       return
    end if
    do step = 1, nsteps
       u = s0(i0:i1, :, IU) + real(step - 1, c_double) * ds(i0:i1, :, IU)
       v = s0(i0:i1, :, IV) + real(step - 1, c_double) * ds(i0:i1, :, IV)
       t = s0(i0:i1, :, IT) + real(step - 1, c_double) * ds(i0:i1, :, IT)
       q = s0(i0:i1, :, IQ) + real(step - 1, c_double) * ds(i0:i1, :, IQ)
       pl = s0(i0:i1, :, IPL) + real(step - 1, c_double) * ds(i0:i1, :, IPL)
       pa = p0(i0:i1, :) + real(step - 1, c_double) * dp(i0:i1, :)
       if (variant == PLAIN) then
          call nudgeml_lmdz_step(n, klev, step, dt, u, v, t, q, pa, pl, dum(i0:i1, :), dvm(i0:i1, :), &
               d_u, d_v, ierr, m)
       else if (variant == EDDY) then
          call nudgeml_lmdz_step(n, klev, step, dt, u, v, t, q, pa, pl, dum(i0:i1, :), dvm(i0:i1, :), &
               d_u, d_v, ierr, m, du_model_mean=mmu(i0:i1, :), dv_model_mean=mmv(i0:i1, :), row_sum=omp_row_sum)
       else
          call nudgeml_lmdz_step(n, klev, step, dt, u, v, t, q, pa, pl, dum(i0:i1, :), dvm(i0:i1, :), &
               d_u, d_v, ierr, m, du_model_mean=mmu(i0:i1, :), dv_model_mean=mmv(i0:i1, :))
       end if
       if (ierr /= 0) then
          errtext = 'step: ' // trim(m)
          bad = -1
          return
       end if
       w = (step - 1) / nref + 1                 ! the window whose refresh step set the correction
       bad = bad + count(d_u /= expect(i0:i1, :, 1, w)) + count(d_v /= expect(i0:i1, :, 2, w))
    end do
    call nudgeml_lmdz_counts(counts(1), counts(2), counts(3), counts(4))
    call nudgeml_lmdz_final()
  end subroutine drive

  subroutine run_case(name, model, backend, nthreads, torch_threads, variant_in)
    character(len=*), intent(in) :: name, model, backend
    integer, intent(in) :: nthreads, torch_threads
    integer, intent(in), optional :: variant_in
    real(c_double), allocatable :: expect(:, :, :, :), buf(:)
    integer(c_int64_t) :: want(4), got(4), part(4)
    integer :: bad, b, nwin, u, tid, half, omp_before, variant
    character(len=1024) :: errtext, e

    variant = PLAIN
    if (present(variant_in)) variant = variant_in
    nwin = (nsteps - 1) / nref + 1
    allocate (buf(2 * klon * klev * nwin))
    call read_f64(trim(fixtures) // '/lmdz/expect_' // name // '.f64', buf)
    expect = reshape(buf, [klon, klev, 2, nwin])
    open (newunit=u, file=trim(fixtures) // '/lmdz/counts_' // name // '.txt', status='old', action='read')
    read (u, *) want
    close (u)
    call check(any(expect(:, :, :, 1) /= expect(:, :, :, 2)), name // ': reference windows differ')

    if (nthreads == 0) then
       omp_before = omp_get_max_threads()
       call omp_set_num_threads(3)
       call drive(trim(fixtures) // model, backend, 1, klon, expect, torch_threads, variant, bad, got, errtext)
       call check(omp_get_max_threads() == 3, name // ': caller''s OpenMP setting kept')
       call omp_set_num_threads(omp_before)
    else
       ! As LMDZ does: each OpenMP thread owns its columns and its copy of the module's state.
       bad = 0
       got = 0
       errtext = ''
       half = klon / nthreads
       !$omp parallel num_threads(nthreads) private(tid, b, part, e) shared(bad, got, errtext)
       tid = omp_get_thread_num()
       call drive(trim(fixtures) // model, backend, tid * half + 1, (tid + 1) * half, expect, torch_threads, &
            variant, b, part, e)
       !$omp critical
       if (b < 0) then
          bad = -1
          errtext = e
       else if (bad >= 0) then
          bad = bad + b
       end if
       got = got + part
       !$omp end critical
       !$omp end parallel
    end if
    call check(bad == 0, name // ': d_u, d_v equal to Python bit for bit at all ' // itoa(nsteps) // &
         ' steps (mismatches: ' // itoa(bad) // ') ' // trim(errtext))
    call check(all(got == want), name // ': counters (refreshes, columns, fallbacks, clipped) = ' // &
         i8toa(got) // ', expected ' // i8toa(want))
    call check(want(3) > 0, name // ': the fixture exercises the fallback')
  end subroutine run_case

  subroutine mean_mode()
    real(c_double) :: d_u(klon, klev), d_v(klon, klev)
    integer :: step
    logical :: ok
    call nudgeml_lmdz_init(NUDGEML_MODE_MEAN, '', klon, klev, dt, ierr, msg)
    call check(ierr == 0, 'mean mode init: ' // trim(msg))
    ok = .true.
    do step = 1, 3
       call nudgeml_lmdz_step(klon, klev, step, dt, s0(:, :, IU), s0(:, :, IV), s0(:, :, IT), s0(:, :, IQ), &
            p0, s0(:, :, IPL), dum, dvm, d_u, d_v, ierr, msg)
       ok = ok .and. ierr == 0 .and. all(d_u == dum * dt) .and. all(d_v == dvm * dt)
    end do
    call check(ok, 'mean mode returns the mean tendency times pdtphys')
    call nudgeml_lmdz_final()
  end subroutine mean_mode

  subroutine errors()
    real(c_double) :: d_u(klon, klev), d_v(klon, klev)
    call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(fixtures) // '/mlp33', klon, 79, dt, ierr, msg)
    call check(ierr /= 0 .and. index(msg, 'LMDZ klev = 79') > 0, 'klev mismatch refused: ' // trim(msg))
    call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(fixtures) // '/nowhere', klon, klev, dt, ierr, msg)
    call check(ierr /= 0 .and. index(msg, 'nowhere/model.json') > 0, 'missing model refused: ' // trim(msg))
    call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(fixtures) // '/mlp33', klon, klev, 1000.0_c_double, ierr, msg)
    call check(ierr /= 0 .and. index(msg, 'whole number') > 0, '6 h not a multiple of the step: ' // trim(msg))
    call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(fixtures) // '/mlp33', klon, klev, dt, ierr, msg, backend='onnx')
    call check(ierr /= 0 .and. index(msg, 'backend') > 0, 'unknown backend refused: ' // trim(msg))
    call nudgeml_lmdz_step(klon, klev, 1, dt, s0(:, :, IU), s0(:, :, IV), s0(:, :, IT), s0(:, :, IQ), &
         p0, s0(:, :, IPL), dum, dvm, d_u, d_v, ierr, msg)
    call check(ierr /= 0 .and. index(msg, 'not called') > 0, 'step before init refused: ' // trim(msg))
    call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(fixtures) // '/mlp33', klon, klev, dt, ierr, msg, gains=gains(:, 1:1))
    call check(ierr /= 0 .and. index(msg, 'gains must be (klev, 2)') > 0, 'gains of the wrong shape refused: ' // trim(msg))
    call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(fixtures) // '/mlp33', klon, klev, dt, ierr, msg, gains=gains)
    call check(ierr == 0, 'init with gains: ' // trim(msg))
    call nudgeml_lmdz_step(klon, klev, 1, dt, s0(:, :, IU), s0(:, :, IV), s0(:, :, IT), s0(:, :, IQ), &
         p0, s0(:, :, IPL), dum, dvm, d_u, d_v, ierr, msg)
    call check(ierr /= 0 .and. index(msg, 'du_model_mean') > 0, 'gains without the model''s mean refused: ' // trim(msg))
    call nudgeml_lmdz_step(klon, klev, 1, dt, s0(:, :, IU), s0(:, :, IV), s0(:, :, IT), s0(:, :, IQ), &
         p0, s0(:, :, IPL), dum, dvm, d_u, d_v, ierr, msg, du_model_mean=mmu)
    call check(ierr /= 0 .and. index(msg, 'go together') > 0, 'du_model_mean without dv_model_mean refused: ' // trim(msg))
    call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(fixtures) // '/mlp33', klon, klev, dt, ierr, msg, rows=rows(1:klon - 1), &
         nrows=nrows)
    call check(ierr /= 0 .and. index(msg, 'one latitude row per column') > 0, 'rows of the wrong size refused: ' // trim(msg))
    call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(fixtures) // '/mlp33', klon, klev, dt, ierr, msg, rows=rows, nrows=nrows - 1)
    call check(ierr /= 0 .and. index(msg, 'rows must lie in 1..nrows') > 0, 'a row beyond nrows refused: ' // trim(msg))
    call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(fixtures) // '/mlp33', klon, klev, dt, ierr, msg, rows=rows, nrows=nrows)
    call check(ierr == 0, 'init with rows: ' // trim(msg))
    call nudgeml_lmdz_step(klon, klev, 1, dt, s0(:, :, IU), s0(:, :, IV), s0(:, :, IT), s0(:, :, IQ), &
         p0, s0(:, :, IPL), dum, dvm, d_u, d_v, ierr, msg)
    call check(ierr /= 0 .and. index(msg, 'pass row_sum') > 0, 'eddies only without the reduction refused: ' // trim(msg))
    call nudgeml_lmdz_final()
  end subroutine errors

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

  subroutine read_f64(path, a)
    character(len=*), intent(in) :: path
    real(c_double), intent(out) :: a(:)
    integer :: unit
    open (newunit=unit, file=path, access='stream', form='unformatted', status='old', action='read')
    read (unit) a
    close (unit)
  end subroutine read_f64

  function itoa(i) result(s)
    integer, intent(in) :: i
    character(len=:), allocatable :: s
    character(len=24) :: buf
    write (buf, '(i0)') i
    s = trim(buf)
  end function itoa

  function i8toa(v) result(s)
    integer(c_int64_t), intent(in) :: v(:)
    character(len=:), allocatable :: s
    character(len=128) :: buf
    write (buf, '(*(i0, :, " "))') v
    s = '(' // trim(buf) // ')'
  end function i8toa

end program test_lmdz
