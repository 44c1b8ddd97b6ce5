!> nudgeml's online correction inside LMDZE's physics (the build copy's `physiq` calls it; LMDZE's
!> own code is not changed otherwise). It puts the LMDZ-shaped routine `nudgeml_lmdz` -- the one
!> LMDZ6's physics calls on Jean Zay (lmdz/INTEGRATION.md) -- inside a real LMDZ-family GCM:
!>
!> * settings: the namelist group `nudgeml_nml` in the file `nudgeml.nml` of the run directory
!>   (`mode` = 'off' | 'mean' | 'ml', `mean_file`, `model_dir`, `interval_hours`, `dump_file`,
!>   `mean_residual`, `eddy_only`);
!>   without the file the correction is off and LMDZE runs as built from its own sources;
!> * `mean_file`: the workflow's mean nudging tendency on the physics columns, `du_mean`/`dv_mean`
!>   (presnivs, points_physiques) in m s-2 -- the file LMDZ6's `nudgeml_physiq_init` reads -- used
!>   by 'mean' and as the guard's fallback by 'ml'; with `mean_residual` ('ml'), also the model's mean
!>   over the training states `du_model_mean`/`dv_model_mean` and, when present, per-level gains
!>   `gain_du`/`gain_dv` (presnivs): the routine then holds du_mean + g * (model - du_model_mean);
!> * `eddy_only` ('ml'): the routine removes the zonal mean of the model's part about the mean per
!>   latitude row (rows numbered from the columns' latitudes, `rlat`); LMDZE runs one process and one
!>   thread, so the reduction of the row sums the routine asks for does nothing here;
!> * the model sees the state physiq receives from the dynamics (u, v, t, water vapour, the
!>   pressures), the columns' latitude and land fraction (LMDZE's `rlat`, `masque`) and cos(zenith)
!>   (`mu0`), as the training columns were read from the dynamics' history;
!> * the wind increments are added to `u_seri`/`v_seri` after LMDZE's conversion of the physics'
!>   kinetic-energy change into heat, so the correction is not converted -- LMDZ's nudging, in the
!>   dynamics, is not either (docs/lmdze.md);
!> * LMDZE is compiled without -r8 (its REAL is 4 bytes): the state is widened to real(c_double) for
!>   `nudgeml_lmdz` (exact) and its increments are rounded back to LMDZE's REAL;
!> * `dump_file`: at the first refresh, the columns given to `nudgeml_lmdz` and the increments it
!>   returned, in float64, for the check that the refresh inside LMDZE equals the Python model on
!>   the same columns bit for bit (tests/test_lmdze.py);
!> * at the last step, one line `nudgeml: refreshes N columns N fallbacks N clipped N` on standard
!>   output, which the workflow's runner reads into the run's status.
!> Any error stops the run with one line naming the file or the setting.
module nudgeml_lmdze_m
  use, intrinsic :: iso_c_binding, only: c_double, c_int64_t
  use netcdf, only: nf90_open, nf90_close, nf90_inq_varid, nf90_get_var, nf90_inquire_variable, &
       nf90_inquire_dimension, nf90_create, nf90_def_dim, nf90_def_var, nf90_enddef, nf90_put_var, &
       nf90_put_att, nf90_strerror, nf90_noerr, nf90_nowrite, nf90_clobber, nf90_double, nf90_global
  use nudgeml_lmdz, only: nudgeml_lmdz_init, nudgeml_lmdz_step, nudgeml_lmdz_counts, nudgeml_lmdz_final, &
       NUDGEML_MODE_OFF, NUDGEML_MODE_MEAN, NUDGEML_MODE_ML
  implicit none
  private
  public :: nudgeml_lmdze_correct

  logical, save :: started = .false.
  integer, save :: mode = NUDGEML_MODE_OFF
  character(len=512), save :: dump_file = ''
  logical, save :: dumped = .false.
  logical, save :: eddies = .false.   ! eddy_only: step passes the (serial) row reduction
  real(c_double), allocatable, save :: du_mean(:, :), dv_mean(:, :)
  real(c_double), allocatable, save :: du_model_mean(:, :), dv_model_mean(:, :)   ! mean_residual only
  ! wall time spent in this hook (s): reading the settings and loading the model, then every step
  ! (the conversions, the routine: features, model call, guard) -- the benchmark's share of the run
  real(c_double), save :: wall_init = 0.0_c_double, wall_steps = 0.0_c_double

contains

  !> Add this physics step's correction to u_seri, v_seri (m s-1). u, v, t, q are the state physiq
  !> received (klon, llm); paprs (klon, llm + 1), play (klon, llm) in Pa; rlat (deg), masque, mu0
  !> per column; itap LMDZE's physics step (1 at the first); dtphys (s); lafin: the last step.
  subroutine nudgeml_lmdze_correct(itap, dtphys, u, v, t, q, paprs, play, rlat, masque, mu0, lafin, &
       u_seri, v_seri)
    integer, intent(in) :: itap
    real, intent(in) :: dtphys
    real, intent(in) :: u(:, :), v(:, :), t(:, :), q(:, :), paprs(:, :), play(:, :)
    real, intent(in) :: rlat(:), masque(:), mu0(:)
    logical, intent(in) :: lafin
    real, intent(inout) :: u_seri(:, :), v_seri(:, :)
    real(c_double), allocatable :: ud(:, :), vd(:, :), td(:, :), qd(:, :), pd(:, :), pld(:, :)
    real(c_double), allocatable :: d_u(:, :), d_v(:, :)
    real(c_double), allocatable :: lat(:), land(:), zen(:)
    integer :: klon, llm, ierr
    character(len=1024) :: msg
    integer(c_int64_t) :: n_refresh, n_columns, n_fallback, n_clipped
    real(c_double) :: t0

    klon = size(u, 1)
    llm = size(u, 2)
    t0 = wall()
    if (.not. started) then
       call start(klon, llm, real(dtphys, c_double), rlat)
       wall_init = wall() - t0
       t0 = wall()
    end if
    if (mode /= NUDGEML_MODE_OFF) then
       allocate (ud(klon, llm), vd(klon, llm), td(klon, llm), qd(klon, llm), pd(klon, llm + 1), pld(klon, llm), &
            d_u(klon, llm), d_v(klon, llm), lat(klon), land(klon), zen(klon))
       ud = real(u, c_double)
       vd = real(v, c_double)
       td = real(t, c_double)
       qd = real(q, c_double)
       pd = real(paprs, c_double)
       pld = real(play, c_double)
       lat = real(rlat, c_double)
       land = real(masque, c_double)
       zen = real(mu0, c_double)
       ! du_model_mean, dv_model_mean are allocated only with mean_residual; an unallocated array passed
       ! to an optional argument is absent (Fortran 2008), as lmdz/INTEGRATION.md's patch relies on
       if (eddies) then
          call nudgeml_lmdz_step(klon, llm, itap, real(dtphys, c_double), ud, vd, td, qd, pd, pld, du_mean, dv_mean, &
               d_u, d_v, ierr, msg, lat_deg=lat, land_frac=land, cos_zen=zen, du_model_mean=du_model_mean, &
               dv_model_mean=dv_model_mean, row_sum=serial_row_sum)
       else
          call nudgeml_lmdz_step(klon, llm, itap, real(dtphys, c_double), ud, vd, td, qd, pd, pld, du_mean, dv_mean, &
               d_u, d_v, ierr, msg, lat_deg=lat, land_frac=land, cos_zen=zen, du_model_mean=du_model_mean, &
               dv_model_mean=dv_model_mean)
       end if
       if (ierr /= 0) call die(trim(msg))
       if (.not. dumped .and. len_trim(dump_file) > 0) then
          call dump(trim(dump_file), itap, real(dtphys, c_double), ud, vd, td, qd, pd, pld, lat, land, zen, d_u, d_v)
          dumped = .true.
       end if
       u_seri = u_seri + real(d_u)
       v_seri = v_seri + real(d_v)
    end if
    wall_steps = wall_steps + (wall() - t0)
    if (lafin) then
       call nudgeml_lmdz_counts(n_refresh, n_columns, n_fallback, n_clipped)
       write (*, '(a, i0, 3(a, i0))') 'nudgeml: mode ', mode, ' refreshes ', n_refresh, ' columns ', n_columns, &
            ' fallbacks ', n_fallback
       write (*, '(a, i0)') 'nudgeml: clipped ', n_clipped
       write (*, '(a, f0.6, a, f0.6)') 'nudgeml: wall seconds init ', wall_init, ' steps ', wall_steps
       call nudgeml_lmdz_final()
    end if
  end subroutine nudgeml_lmdze_correct

  !> The row sums of the routine's eddies only, reduced over LMDZE's one process and one thread:
  !> they are the grid's already.
  subroutine serial_row_sum(a)
    real(c_double), intent(inout) :: a(:)
    continue   ! a is the total as it is
  end subroutine serial_row_sum

  subroutine start(klon, llm, dtphys, rlat)
    integer, intent(in) :: klon, llm
    real(c_double), intent(in) :: dtphys
    real, intent(in) :: rlat(:)
    character(len=8) :: mode_name
    character(len=512) :: mean_file, model_dir
    real(c_double) :: interval_hours
    integer :: unit, ios, ierr
    character(len=1024) :: msg
    logical :: there, mean_residual, eddy_only
    real(c_double), allocatable :: gains(:, :)
    integer, allocatable :: rows(:)
    integer :: i
    namelist /nudgeml_nml/ mode_name, mean_file, model_dir, interval_hours, dump_file, mean_residual, eddy_only

    started = .true.
    mode_name = 'off'
    mean_file = ''
    model_dir = ''
    interval_hours = 6.0_c_double
    dump_file = ''
    mean_residual = .false.
    eddy_only = .false.
    inquire (file='nudgeml.nml', exist=there)
    if (.not. there) return
    open (newunit=unit, file='nudgeml.nml', status='old', action='read', iostat=ios)
    if (ios /= 0) call die('nudgeml.nml: cannot open')
    read (unit, nml=nudgeml_nml, iostat=ios, iomsg=msg)
    if (ios /= 0) call die('nudgeml.nml: group nudgeml_nml: ' // trim(msg))
    close (unit)
    select case (trim(mode_name))
    case ('off')
       mode = NUDGEML_MODE_OFF
    case ('mean')
       mode = NUDGEML_MODE_MEAN
    case ('ml')
       mode = NUDGEML_MODE_ML
    case default
       call die('nudgeml.nml: mode_name is ''' // trim(mode_name) // '''; use off, mean or ml')
    end select
    write (*, '(a)') 'nudgeml: correction ' // trim(mode_name) // ' (nudgeml.nml)'
    if (mode == NUDGEML_MODE_OFF) return
    if (len_trim(mean_file) == 0) call die('nudgeml.nml: mean_file is required with mode ' // trim(mode_name))
    allocate (du_mean(klon, llm), dv_mean(klon, llm))
    call read_mean(trim(mean_file), 'du_mean', du_mean)
    call read_mean(trim(mean_file), 'dv_mean', dv_mean)
    if (mean_residual .and. mode /= NUDGEML_MODE_ML) call die('nudgeml.nml: mean_residual needs mode ''ml''')
    if (mean_residual) then
       allocate (du_model_mean(klon, llm), dv_model_mean(klon, llm))
       call read_mean(trim(mean_file), 'du_model_mean', du_model_mean)
       call read_mean(trim(mean_file), 'dv_model_mean', dv_model_mean)
       call read_gains(trim(mean_file), llm, gains)
    end if
    if (eddy_only .and. mode /= NUDGEML_MODE_ML) call die('nudgeml.nml: eddy_only needs mode ''ml''')
    if (eddy_only) then
       ! LMDZ's column order: north pole, the rows north to south, south pole: a new row where the
       ! latitude changes
       allocate (rows(klon))
       rows(1) = 1
       do i = 2, klon
          rows(i) = rows(i - 1)
          if (rlat(i) /= rlat(i - 1)) rows(i) = rows(i) + 1
       end do
       eddies = .true.
       call nudgeml_lmdz_init(mode, trim(model_dir), klon, llm, dtphys, ierr, msg, interval_hours=interval_hours, &
            torch_threads=1, gains=gains, rows=rows, nrows=rows(klon))
    else
       call nudgeml_lmdz_init(mode, trim(model_dir), klon, llm, dtphys, ierr, msg, interval_hours=interval_hours, &
            torch_threads=1, gains=gains)   ! unallocated gains: absent, gains 1
    end if
    if (ierr /= 0) call die(trim(msg))
  end subroutine start

  !> The per-level gains `gain_du`, `gain_dv` (presnivs) of the mean file into gains(llm, 2), if the
  !> file has them (else gains stays unallocated: gains 1); one without the other is an error.
  subroutine read_gains(path, llm, gains)
    character(len=*), intent(in) :: path
    integer, intent(in) :: llm
    real(c_double), allocatable, intent(out) :: gains(:, :)
    integer :: ncid, varid(2), status(2), j, n, ndims, dimids(1), st
    character(len=*), parameter :: names(2) = ['gain_du', 'gain_dv']

    st = nf90_open(path, nf90_nowrite, ncid)
    if (st /= nf90_noerr) call die(path // ': ' // trim(nf90_strerror(st)))
    do j = 1, 2
       status(j) = nf90_inq_varid(ncid, names(j), varid(j))
    end do
    if (all(status /= nf90_noerr)) then
       st = nf90_close(ncid)
       return
    end if
    if (any(status /= nf90_noerr)) call die(path // ': has one of gain_du, gain_dv without the other')
    allocate (gains(llm, 2))
    do j = 1, 2
       st = nf90_inquire_variable(ncid, varid(j), ndims=ndims, dimids=dimids)
       if (ndims /= 1) call die(path // ': ' // names(j) // ' is not (presnivs)')
       st = nf90_inquire_dimension(ncid, dimids(1), len=n)
       if (n /= llm) call die(path // ': ' // names(j) // ' is not on this model''s levels')
       st = nf90_get_var(ncid, varid(j), gains(:, j))
       if (st /= nf90_noerr) call die(path // ': ' // names(j) // ': ' // trim(nf90_strerror(st)))
    end do
    st = nf90_close(ncid)
  end subroutine read_gains

  !> One (points_physiques, presnivs) variable of the mean-tendency file into a (klon, llm) array.
  subroutine read_mean(path, name, out)
    character(len=*), intent(in) :: path, name
    real(c_double), intent(out) :: out(:, :)
    integer :: ncid, varid, ndims, dimids(2), n1, n2, status

    status = nf90_open(path, nf90_nowrite, ncid)
    if (status /= nf90_noerr) call die(path // ': ' // trim(nf90_strerror(status)))
    status = nf90_inq_varid(ncid, name, varid)
    if (status /= nf90_noerr) call die(path // ': no variable ' // name)
    status = nf90_inquire_variable(ncid, varid, ndims=ndims, dimids=dimids)
    if (ndims /= 2) call die(path // ': ' // name // ' is not (presnivs, points_physiques)')
    status = nf90_inquire_dimension(ncid, dimids(1), len=n1)
    status = nf90_inquire_dimension(ncid, dimids(2), len=n2)
    if (n1 /= size(out, 1) .or. n2 /= size(out, 2)) then
       write (*, '(a, 4(1x, i0))') 'nudgeml: file, model (klon, llm):', n1, n2, size(out, 1), size(out, 2)
       call die(path // ': ' // name // ' is not on this model''s physics columns and levels')
    end if
    status = nf90_get_var(ncid, varid, out)
    if (status /= nf90_noerr) call die(path // ': ' // name // ': ' // trim(nf90_strerror(status)))
    status = nf90_close(ncid)
  end subroutine read_mean

  subroutine dump(path, itap, dtphys, u, v, t, q, paprs, play, lat, land, zen, d_u, d_v)
    character(len=*), intent(in) :: path
    integer, intent(in) :: itap
    real(c_double), intent(in) :: dtphys
    real(c_double), intent(in) :: u(:, :), v(:, :), t(:, :), q(:, :), paprs(:, :), play(:, :)
    real(c_double), intent(in) :: lat(:), land(:), zen(:), d_u(:, :), d_v(:, :)
    integer :: ncid, dk, dl, dl1, ids(11), status, j

    status = nf90_create(path, nf90_clobber, ncid)
    if (status /= nf90_noerr) call die(path // ': ' // trim(nf90_strerror(status)))
    status = nf90_def_dim(ncid, 'points_physiques', size(u, 1), dk)
    status = nf90_def_dim(ncid, 'presnivs', size(u, 2), dl)
    status = nf90_def_dim(ncid, 'interfaces', size(u, 2) + 1, dl1)
    status = nf90_def_var(ncid, 'u', nf90_double, [dk, dl], ids(1))
    status = nf90_def_var(ncid, 'v', nf90_double, [dk, dl], ids(2))
    status = nf90_def_var(ncid, 't', nf90_double, [dk, dl], ids(3))
    status = nf90_def_var(ncid, 'q', nf90_double, [dk, dl], ids(4))
    status = nf90_def_var(ncid, 'paprs', nf90_double, [dk, dl1], ids(5))
    status = nf90_def_var(ncid, 'play', nf90_double, [dk, dl], ids(6))
    status = nf90_def_var(ncid, 'lat_deg', nf90_double, [dk], ids(7))
    status = nf90_def_var(ncid, 'land_fraction', nf90_double, [dk], ids(8))
    status = nf90_def_var(ncid, 'cos_zenith', nf90_double, [dk], ids(9))
    status = nf90_def_var(ncid, 'd_u', nf90_double, [dk, dl], ids(10))
    status = nf90_def_var(ncid, 'd_v', nf90_double, [dk, dl], ids(11))
    status = nf90_put_att(ncid, nf90_global, 'itap', itap)
    status = nf90_put_att(ncid, nf90_global, 'dtphys_s', dtphys)
    status = nf90_put_att(ncid, nf90_global, 'eddy_only', merge(1, 0, eddies))
    status = nf90_put_att(ncid, nf90_global, 'title', &
         'nudgeml_lmdz inputs and increments (m s-1 over the step) at its first refresh in LMDZE')
    status = nf90_enddef(ncid)
    status = nf90_put_var(ncid, ids(1), u)
    status = nf90_put_var(ncid, ids(2), v)
    status = nf90_put_var(ncid, ids(3), t)
    status = nf90_put_var(ncid, ids(4), q)
    status = nf90_put_var(ncid, ids(5), paprs)
    status = nf90_put_var(ncid, ids(6), play)
    status = nf90_put_var(ncid, ids(7), lat)
    status = nf90_put_var(ncid, ids(8), land)
    status = nf90_put_var(ncid, ids(9), zen)
    status = nf90_put_var(ncid, ids(10), d_u)
    j = nf90_put_var(ncid, ids(11), d_v)
    status = nf90_close(ncid)
    if (j /= nf90_noerr .or. status /= nf90_noerr) call die(path // ': writing failed')
  end subroutine dump

  real(c_double) function wall()
    integer(c_int64_t) :: count, rate
    call system_clock(count, rate)
    wall = real(count, c_double) / real(rate, c_double)
  end function wall

  subroutine die(text)
    character(len=*), intent(in) :: text
    write (*, '(a)') 'nudgeml: error: ' // text
    error stop 1
  end subroutine die

end module nudgeml_lmdze_m
