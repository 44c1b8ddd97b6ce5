!> LMDZ-shaped online correction: every `interval` of model time (6 h by default) build the features
!> of the exported model from the physics state, run the model, guard its output, and hold the
!> resulting wind tendency until the next refresh. Each physics step returns the increments
!> d_u = tendency * pdtphys, d_v likewise (m s-1 over the step), ready for LMDZ's add_phys_tend.
!>
!> Calling convention as in LMDZ's physiq: (klon, klev) arrays, k = 1 the lowest layer,
!> paprs(klon, klev+1) interface pressure (paprs(:,1) = surface pressure), pplay(klon, klev) layer
!> pressure, all real(c_double) (LMDZ compiles with -r8, so its default real is 8 bytes; a caller
!> compiled without -r8 fails at compile time instead of passing wrong data).
!>
!> Parallelism: every variable of this module is OpenMP THREADPRIVATE, as LMDZ's physics saves
!> its state: each OpenMP thread (and each MPI rank) calls init and step for its own klon columns
!> and holds its own model handle. Nothing here communicates (eddies only calls the caller's
!> reduction); the counters are per thread.
!>
!> Guard (docs/model-format.md; nudgeml.guard is the Python twin, tested bit for bit):
!>   span_j = max_j - min_j, lo_j = min_j - margin*span_j, hi_j = max_j + margin*span_j (float64);
!>   a column falls back to the mean tendency (du_mean, dv_mean) if any float32 feature, widened to
!>   float64, is outside [lo_j, hi_j] or not finite, or any output is not finite; otherwise each
!>   output is clipped to [lo_j, hi_j] for its target, counting the values clipped.
!>
!> Mean residual and gains (the stand-in's `mean_residual` and `calibrated` runs, nudgeml.coupled): given
!> the model's own mean over the nudged run's training states (du_model_mean, dv_model_mean at step) the
!> held tendency of a column the guard keeps is
!>   du_mean + g_k * (clipped model output - du_model_mean)      (float64, in this order)
!> with one gain g_k per level and tendency (init's `gains`, 1 when absent: the plain mean residual,
!> whose training mean is the nudging mean; 0 is the mean tendency itself). A column that falls back
!> gets du_mean. Without du_model_mean the held tendency is the clipped output (the seed's run).
!>
!> Eddies only (the stand-in's `eddy_only`, nudgeml.coupled.zonal_departure): given each column's
!> latitude row (init's `rows`, 1..n_rows over the whole grid) the model's part about the mean,
!> P = held - du_mean of the columns the guard keeps, loses its zonal mean per row and level:
!>   held = du_mean + (P - S_r / N_r),   S_r = sum of P over the row's kept columns, N_r their number
!> (float64, in this order), so the correction's zonal mean is the mean tendency's. A row spans
!> threads and MPI ranks: step's `row_sum` (the caller's reduction, e.g. LMDZ's reduce_sum then
!> bcast) turns this thread's partial sums into the grid's; with one process and one thread it does
!> nothing. The partial sums run over the columns in their order, each thread's from 0.
!>
!> Backends: 'torchscript' (model.pt) and 'aoti' (model.pt2) through the libtorch bridge; 'trees', the
!> compiled tree ensemble of an exported xgboost model (model_trees.so, nudgeml.trees) opened with
!> dlopen through nudgeml_trees, with no libtorch call. Features, guard and counters are the same.
!>
!> Copies, for the record: building the features is one pass that converts r8 -> float32 and
!> transposes (klon, klev) into the model's row-major (n_features, klon) buffer -- unavoidable,
!> the model takes float32; the model reads that buffer without a copy; its output is read in
!> place (nml_forward_view) by the guard, which writes the r8 tendencies -- the second unavoidable
!> conversion. No other copy is made.
module nudgeml_lmdz
  use, intrinsic :: iso_c_binding, only: c_double, c_float, c_int64_t
  use, intrinsic :: ieee_arithmetic, only: ieee_is_finite
  use nudgeml_torch, only: nml_model, nml_manifest, nml_read_manifest, nml_load, nml_free, &
       nml_forward_view, nml_is_loaded, NML_OK, NML_BACKEND_TORCHSCRIPT, NML_BACKEND_AOTI
  use nudgeml_trees, only: nml_trees, nml_trees_load, nml_trees_forward_t, nml_trees_free
  implicit none
  private

  public :: nudgeml_lmdz_init, nudgeml_lmdz_step, nudgeml_lmdz_counts, nudgeml_lmdz_final, nudgeml_row_sum

  !> The caller's reduction for eddies only: on return, `a` holds its sum over every thread and MPI
  !> rank that holds columns (the same on all). Layout: S (n_rows, klev, 2: du, dv) then N (n_rows).
  abstract interface
     subroutine nudgeml_row_sum(a)
       import :: c_double
       real(c_double), intent(inout) :: a(:)
     end subroutine nudgeml_row_sum
  end interface

  !> Modes (config.def key nudgeml_mode): no correction, mean nudging tendency, learned model.
  integer, parameter, public :: NUDGEML_MODE_OFF = 0, NUDGEML_MODE_MEAN = 1, NUDGEML_MODE_ML = 2

  ! Where each feature column comes from.
  integer, parameter :: SRC_U = 1, SRC_V = 2, SRC_T = 3, SRC_Q = 4, SRC_P = 5, SRC_PS = 6, &
       SRC_SIN_LAT = 7, SRC_COS_LAT = 8, SRC_LAND = 9, SRC_COS_ZENITH = 10
  real(c_double), parameter :: DEG2RAD = 3.14159265358979323846_c_double / 180.0_c_double
  integer, parameter :: NBLOCK = 64   ! columns per block when building the features

  logical, save :: initialised = .false.
  integer, save :: mode = NUDGEML_MODE_OFF
  integer, save :: klon_s = 0, klev_s = 0, n_feat = 0, n_targ = 0, nstep_refresh = 1
  integer, save :: du_off = 0, dv_off = 0      ! first column of the du / dv target blocks, 0-based
  logical, save :: holding = .false.
  type(nml_model), save :: model
  logical, save :: use_trees = .false.                            ! backend 'trees'
  type(nml_trees), save :: trees
  real(c_float), allocatable, save, target :: yt(:, :)          ! (n_targ, klon) the trees' output
  integer, allocatable, save :: feat_src(:), feat_lev(:)
  real(c_double), allocatable, save :: flo(:), fhi(:), tlo(:), thi(:)
  real(c_float), allocatable, save, target :: xt(:, :)          ! (n_feat, klon) model input
  real(c_double), allocatable, save :: du_held(:, :), dv_held(:, :) ! (klon, klev) m s-2
  real(c_double), allocatable, save :: gain(:, :)                 ! (klev, 2): du, dv gains (the module header)
  integer, save :: n_rows = 0                                     ! > 0: eddies only (the module header)
  integer, allocatable, save :: row_of(:)                         ! (klon) each column's latitude row
  real(c_double), allocatable, save :: row_buf(:)                 ! S then N, as nudgeml_row_sum
  integer(c_int64_t), save :: n_refresh = 0, n_columns = 0, n_fallback = 0, n_clipped = 0
  !$OMP THREADPRIVATE(initialised, mode, klon_s, klev_s, n_feat, n_targ, nstep_refresh, du_off, dv_off)
  !$OMP THREADPRIVATE(holding, model, feat_src, feat_lev, flo, fhi, tlo, thi, xt, du_held, dv_held)
  !$OMP THREADPRIVATE(n_refresh, n_columns, n_fallback, n_clipped, use_trees, trees, yt, gain)
  !$OMP THREADPRIVATE(n_rows, row_of, row_buf)

contains

  function itoa(i) result(s)
    integer, intent(in) :: i
    character(len=:), allocatable :: s
    character(len=24) :: buf
    write (buf, '(i0)') i
    s = trim(buf)
  end function itoa

  subroutine set_err(ierr, errmsg, code, text)
    integer, intent(out) :: ierr
    character(len=*), intent(out) :: errmsg
    integer, intent(in) :: code
    character(len=*), intent(in) :: text
    ierr = code
    errmsg = text
  end subroutine set_err

  !> Prepare this thread: read the manifest, check it against klev, load the model.
  !>   mode          NUDGEML_MODE_OFF / _MEAN / _ML
  !>   model_dir     directory with model.json, model.pt, model.pt2 (ML mode only)
  !>   klon, klev    this thread's columns and the model levels
  !>   pdtphys       physics time step (s); interval_hours must be a multiple of it
  !>   backend       'torchscript' (default) or 'aoti'
  !>   torch_threads libtorch intra-op threads for this thread's calls (default 1: LMDZ's own
  !>                 OpenMP threads already use the cores)
  !>   gains         (klev, 2) gains of du, dv about the model's mean (ML mode; step must then pass
  !>                 du_model_mean, dv_model_mean); absent: 1
  !>   rows, nrows   eddies only (ML mode): each of this thread's columns' latitude row, 1..nrows over
  !>                 the whole grid (step must then pass row_sum); absent: off
  subroutine nudgeml_lmdz_init(mode_in, model_dir, klon, klev, pdtphys, ierr, errmsg, backend, &
       interval_hours, torch_threads, gains, rows, nrows)
    integer, intent(in) :: mode_in
    character(len=*), intent(in) :: model_dir
    integer, intent(in) :: klon, klev
    real(c_double), intent(in) :: pdtphys
    integer, intent(out) :: ierr
    character(len=*), intent(out) :: errmsg
    character(len=*), intent(in), optional :: backend
    real(c_double), intent(in), optional :: interval_hours
    integer, intent(in), optional :: torch_threads
    real(c_double), intent(in), optional :: gains(:, :)
    integer, intent(in), optional :: rows(:), nrows
    real(c_double) :: interval_s, span
    type(nml_manifest) :: man
    integer :: b, j, k, off, nth, src, want_levels
    character(len=len(errmsg)) :: msg
    character(len=:), allocatable :: ctx

    ierr = 0
    errmsg = ''
    call nudgeml_lmdz_final()
    if (mode_in /= NUDGEML_MODE_OFF .and. mode_in /= NUDGEML_MODE_MEAN .and. mode_in /= NUDGEML_MODE_ML) then
       call set_err(ierr, errmsg, 1, 'nudgeml_lmdz_init: unknown mode ' // itoa(mode_in))
       return
    end if
    if (klon < 1 .or. klev < 1 .or. .not. (pdtphys > 0.0_c_double)) then
       call set_err(ierr, errmsg, 1, 'nudgeml_lmdz_init: klon, klev and pdtphys must be positive')
       return
    end if
    interval_s = 6.0_c_double * 3600.0_c_double
    if (present(interval_hours)) interval_s = interval_hours * 3600.0_c_double
    nstep_refresh = nint(interval_s / pdtphys)
    if (nstep_refresh < 1 .or. abs(nstep_refresh * pdtphys - interval_s) > 1.0e-6_c_double * interval_s) then
       call set_err(ierr, errmsg, 1, 'nudgeml_lmdz_init: the correction interval is not a whole number '// &
            'of physics steps (pdtphys)')
       return
    end if
    mode = mode_in
    klon_s = klon
    klev_s = klev
    allocate (du_held(klon, klev), dv_held(klon, klev))
    du_held = 0.0_c_double
    dv_held = 0.0_c_double
    initialised = .true.
    if (mode /= NUDGEML_MODE_ML) return

    ctx = 'nudgeml_lmdz_init: ' // trim(model_dir) // ': '
    if (present(gains)) then
       if (size(gains, 1) /= klev .or. size(gains, 2) /= 2) then
          call fail(1, 'nudgeml_lmdz_init: gains must be (klev, 2) = (' // itoa(klev) // ', 2) for du, dv, got (' // &
               itoa(size(gains, 1)) // ', ' // itoa(size(gains, 2)) // ')')
          return
       end if
       if (.not. all(ieee_is_finite(gains))) then
          call fail(1, 'nudgeml_lmdz_init: gains are not all finite')
          return
       end if
       allocate (gain(klev, 2))
       gain = gains
    end if
    if (present(rows) .neqv. present(nrows)) then
       call fail(1, 'nudgeml_lmdz_init: rows and nrows go together (eddies only)')
       return
    end if
    if (present(rows)) then
       if (size(rows) /= klon .or. nrows < 1) then
          call fail(1, 'nudgeml_lmdz_init: rows must hold one latitude row per column (klon = ' // itoa(klon) // &
               '), got ' // itoa(size(rows)) // ', and nrows must be positive')
          return
       end if
       if (any(rows < 1 .or. rows > nrows)) then
          call fail(1, 'nudgeml_lmdz_init: rows must lie in 1..nrows = ' // itoa(nrows) // ', got ' // &
               itoa(minval(rows)) // '..' // itoa(maxval(rows)))
          return
       end if
       n_rows = nrows
       allocate (row_of(klon), row_buf(nrows * klev * 2 + nrows))
       row_of = rows
    end if
    b = NML_BACKEND_TORCHSCRIPT
    if (present(backend)) then
       select case (trim(backend))
       case ('torchscript')
          b = NML_BACKEND_TORCHSCRIPT
       case ('aoti')
          b = NML_BACKEND_AOTI
       case ('trees')
          use_trees = .true.
       case default
          call fail(2, 'nudgeml_lmdz_init: backend must be ''torchscript'', ''aoti'' or ''trees'', got ''' // &
               trim(backend) // '''')
          return
       end select
    end if
    nth = 1
    if (present(torch_threads)) nth = torch_threads

    call nml_read_manifest(model_dir, man, ierr, msg)
    if (ierr /= NML_OK) then
       call fail(ierr, trim(msg))
       return
    end if
    if (man%n_levels /= klev) then
       call fail(3, ctx // 'model.json has ' // itoa(man%n_levels) // ' levels (levels.values), LMDZ klev = ' // &
            itoa(klev))
       return
    end if

    n_feat = man%n_features
    allocate (feat_src(n_feat), feat_lev(n_feat))
    off = 0
    do j = 1, size(man%features)
       select case (trim(man%features(j)%name))
       case ('u')
          src = SRC_U
       case ('v')
          src = SRC_V
       case ('t')
          src = SRC_T
       case ('q')
          src = SRC_Q
       case ('p')
          src = SRC_P
       case ('ps')
          src = SRC_PS
       case ('sin_lat')
          src = SRC_SIN_LAT
       case ('cos_lat')
          src = SRC_COS_LAT
       case ('land_fraction')
          src = SRC_LAND
       case ('cos_zenith')
          src = SRC_COS_ZENITH
       case default
          call fail(3, ctx // 'feature block ''' // trim(man%features(j)%name) // &
               ''' has no LMDZ source (known: u v t q p ps sin_lat cos_lat land_fraction cos_zenith)')
          return
       end select
       want_levels = 1
       if (src <= SRC_P) want_levels = klev
       if (man%features(j)%levels /= want_levels) then
          call fail(3, ctx // 'feature block ''' // trim(man%features(j)%name) // ''' has ' // &
               itoa(man%features(j)%levels) // ' levels, expected ' // itoa(want_levels) // ' (LMDZ klev = ' // &
               itoa(klev) // ')')
          return
       end if
       do k = 1, want_levels
          feat_src(off + k) = src
          feat_lev(off + k) = k
       end do
       off = off + want_levels
    end do

    n_targ = man%n_targets
    du_off = -1
    dv_off = -1
    off = 0
    do j = 1, size(man%targets)
       if (man%targets(j)%levels /= klev) then
          call fail(3, ctx // 'target block ''' // trim(man%targets(j)%name) // ''' has ' // &
               itoa(man%targets(j)%levels) // ' levels, LMDZ klev = ' // itoa(klev))
          return
       end if
       select case (trim(man%targets(j)%name))
       case ('du')
          du_off = off
       case ('dv')
          dv_off = off
       case default
          call fail(3, ctx // 'target block ''' // trim(man%targets(j)%name) // ''' is not du or dv')
          return
       end select
       off = off + klev
    end do
    if (du_off < 0 .or. dv_off < 0 .or. size(man%targets) /= 2) then
       call fail(3, ctx // 'targets must be exactly the blocks du and dv')
       return
    end if

    allocate (flo(n_feat), fhi(n_feat), tlo(n_targ), thi(n_targ))
    do j = 1, n_feat
       span = man%feature_max(j) - man%feature_min(j)
       flo(j) = man%feature_min(j) - man%margin * span
       fhi(j) = man%feature_max(j) + man%margin * span
    end do
    do j = 1, n_targ
       span = man%target_max(j) - man%target_min(j)
       tlo(j) = man%target_min(j) - man%margin * span
       thi(j) = man%target_max(j) + man%margin * span
    end do
    allocate (xt(n_feat, klon))

    if (use_trees) then
       ! the library's own feature and target counts must be the manifest's
       call nml_trees_load(model_dir, trees, ierr, msg, n_features=n_feat, n_targets=n_targ)
       if (ierr == 0) allocate (yt(n_targ, klon))
    else if (b == NML_BACKEND_AOTI) then
       call nml_load(model, man%aoti_path, ierr, msg, backend=b, num_threads=nth, &
            n_features=n_feat, n_targets=n_targ)
    else
       call nml_load(model, man%torchscript_path, ierr, msg, backend=b, num_threads=nth, &
            n_features=n_feat, n_targets=n_targ)
    end if
    if (ierr /= NML_OK) then
       call fail(ierr, trim(msg))
       return
    end if

  contains

    subroutine fail(code, text)
      integer, intent(in) :: code
      character(len=*), intent(in) :: text
      call set_err(ierr, errmsg, code, text)
      call nudgeml_lmdz_final()
    end subroutine fail

  end subroutine nudgeml_lmdz_init

  !> One physics step. itap is LMDZ's physics step counter (1 at the first step of the run): the
  !> correction is recomputed when mod(itap-1, interval/pdtphys) == 0, and at the first call if
  !> none is held yet (a run restarted inside a window). Outputs d_u, d_v are the increments over
  !> this step in m s-1. lat_deg, land_frac, cos_zen are needed only if the model uses them;
  !> du_model_mean, dv_model_mean (m s-2, the model's mean over the training states) turn the mean
  !> residual on (required when init was given gains). row_sum: the reduction of the eddies-only row
  !> sums across threads and ranks (required when init was given rows; see nudgeml_row_sum).
  subroutine nudgeml_lmdz_step(klon, klev, itap, pdtphys, u, v, t, q, paprs, pplay, du_mean, dv_mean, &
       d_u, d_v, ierr, errmsg, lat_deg, land_frac, cos_zen, du_model_mean, dv_model_mean, row_sum)
    integer, intent(in) :: klon, klev, itap
    real(c_double), intent(in) :: pdtphys
    real(c_double), intent(in) :: u(klon, klev), v(klon, klev), t(klon, klev), q(klon, klev)
    real(c_double), intent(in) :: paprs(klon, klev + 1), pplay(klon, klev)
    real(c_double), intent(in) :: du_mean(klon, klev), dv_mean(klon, klev)   ! m s-2
    real(c_double), intent(out) :: d_u(klon, klev), d_v(klon, klev)         ! m s-1 over the step
    integer, intent(out) :: ierr
    character(len=*), intent(out) :: errmsg
    real(c_double), intent(in), optional :: lat_deg(klon), land_frac(klon), cos_zen(klon)
    real(c_double), intent(in), optional :: du_model_mean(klon, klev), dv_model_mean(klon, klev)  ! m s-2
    procedure(nudgeml_row_sum), optional :: row_sum

    ierr = 0
    errmsg = ''
    d_u = 0.0_c_double
    d_v = 0.0_c_double
    if (.not. initialised) then
       call set_err(ierr, errmsg, 1, 'nudgeml_lmdz_step: nudgeml_lmdz_init was not called on this thread')
       return
    end if
    if (klon /= klon_s .or. klev /= klev_s) then
       call set_err(ierr, errmsg, 1, 'nudgeml_lmdz_step: called with klon, klev = ' // itoa(klon) // ', ' // &
            itoa(klev) // ' but initialised with ' // itoa(klon_s) // ', ' // itoa(klev_s))
       return
    end if
    if (mode == NUDGEML_MODE_OFF) return

    if (.not. holding .or. mod(itap - 1, nstep_refresh) == 0) then
       if (mode == NUDGEML_MODE_MEAN) then
          du_held = du_mean
          dv_held = dv_mean
       else
          call refresh(ierr, errmsg)
          if (ierr /= 0) return
       end if
       holding = .true.
       n_refresh = n_refresh + 1
    end if
    d_u = du_held * pdtphys
    d_v = dv_held * pdtphys

  contains

    subroutine refresh(ierr, errmsg)
      integer, intent(out) :: ierr
      character(len=*), intent(out) :: errmsg
      real(c_float), pointer :: y(:, :)
      real(c_double) :: xv
      logical :: bad, residual
      logical, allocatable :: kept(:)
      integer :: i, j, k, i0, i1

      ierr = 0
      if (present(du_model_mean) .neqv. present(dv_model_mean)) then
         call set_err(ierr, errmsg, 4, 'nudgeml_lmdz_step: du_model_mean and dv_model_mean go together')
         return
      end if
      residual = present(du_model_mean)
      if (allocated(gain) .and. .not. residual) then
         call set_err(ierr, errmsg, 4, 'nudgeml_lmdz_step: init was given gains: pass du_model_mean, dv_model_mean '// &
              '(the model''s mean the gains scale about)')
         return
      end if
      if (n_rows > 0 .and. .not. present(row_sum)) then
         call set_err(ierr, errmsg, 4, 'nudgeml_lmdz_step: init was given rows (eddies only): pass row_sum, '// &
              'the reduction of the row sums across threads and ranks')
         return
      end if
      if (n_rows > 0) allocate (kept(klon))
      do j = 1, n_feat
         select case (feat_src(j))
         case (SRC_SIN_LAT, SRC_COS_LAT)
            if (.not. present(lat_deg)) then
               call set_err(ierr, errmsg, 4, 'nudgeml_lmdz_step: the model needs lat_deg')
               return
            end if
         case (SRC_LAND)
            if (.not. present(land_frac)) then
               call set_err(ierr, errmsg, 4, 'nudgeml_lmdz_step: the model needs land_frac')
               return
            end if
         case (SRC_COS_ZENITH)
            if (.not. present(cos_zen)) then
               call set_err(ierr, errmsg, 4, 'nudgeml_lmdz_step: the model needs cos_zen')
               return
            end if
         end select
      end do

      ! Features, row-major (n_feat, klon): the conversion to float32 is the one copy made. Blocks
      ! of NBLOCK columns keep both the (klon, klev) reads and the transposed writes in cache.
      do i0 = 1, klon, NBLOCK
         i1 = min(i0 + NBLOCK - 1, klon)
         do j = 1, n_feat
            k = feat_lev(j)
            select case (feat_src(j))
            case (SRC_U)
               xt(j, i0:i1) = real(u(i0:i1, k), c_float)
            case (SRC_V)
               xt(j, i0:i1) = real(v(i0:i1, k), c_float)
            case (SRC_T)
               xt(j, i0:i1) = real(t(i0:i1, k), c_float)
            case (SRC_Q)
               xt(j, i0:i1) = real(q(i0:i1, k), c_float)
            case (SRC_P)
               xt(j, i0:i1) = real(pplay(i0:i1, k), c_float)
            case (SRC_PS)
               xt(j, i0:i1) = real(paprs(i0:i1, 1), c_float)
            case (SRC_SIN_LAT)
               xt(j, i0:i1) = real(sin(lat_deg(i0:i1) * DEG2RAD), c_float)
            case (SRC_COS_LAT)
               xt(j, i0:i1) = real(cos(lat_deg(i0:i1) * DEG2RAD), c_float)
            case (SRC_LAND)
               xt(j, i0:i1) = real(land_frac(i0:i1), c_float)
            case (SRC_COS_ZENITH)
               xt(j, i0:i1) = real(cos_zen(i0:i1), c_float)
            end select
         end do
      end do

      if (use_trees) then
         call nml_trees_forward_t(trees, xt, yt, ierr, errmsg)
         y => yt
      else
         call nml_forward_view(model, xt, y, ierr, errmsg)
      end if
      if (ierr /= 0) return

      do i = 1, klon
         bad = .false.
         do j = 1, n_feat
            xv = real(xt(j, i), c_double)
            ! written so that NaN (all comparisons false) counts as outside
            if (.not. (xv >= flo(j) .and. xv <= fhi(j))) then
               bad = .true.
               exit
            end if
         end do
         if (.not. bad) then
            do j = 1, n_targ
               if (.not. ieee_is_finite(y(j, i))) then
                  bad = .true.
                  exit
               end if
            end do
         end if
         if (n_rows > 0) kept(i) = .not. bad
         if (bad) then
            n_fallback = n_fallback + 1
            du_held(i, :) = du_mean(i, :)
            dv_held(i, :) = dv_mean(i, :)
            cycle
         end if
         do k = 1, klev
            call clip_target(y(du_off + k, i), du_off + k, du_held(i, k))
            call clip_target(y(dv_off + k, i), dv_off + k, dv_held(i, k))
         end do
         if (residual) then
            if (allocated(gain)) then
               du_held(i, :) = du_mean(i, :) + gain(:, 1) * (du_held(i, :) - du_model_mean(i, :))
               dv_held(i, :) = dv_mean(i, :) + gain(:, 2) * (dv_held(i, :) - dv_model_mean(i, :))
            else
               du_held(i, :) = du_mean(i, :) + (du_held(i, :) - du_model_mean(i, :))
               dv_held(i, :) = dv_mean(i, :) + (dv_held(i, :) - dv_model_mean(i, :))
            end if
         end if
      end do
      n_columns = n_columns + klon
      if (n_rows > 0) call eddies(kept)

    end subroutine refresh

    !> Eddies only: the kept columns' part about the mean loses its zonal mean per row and level.
    !> The part about the mean is held - mean, taken again in the second pass (the same float64
    !> subtraction, so no copy of it is kept).
    subroutine eddies(kept)
      logical, intent(in) :: kept(:)
      integer :: i, k, r, ns
      ns = n_rows * klev * 2
      row_buf = 0.0_c_double
      do i = 1, klon
         if (.not. kept(i)) cycle
         r = row_of(i)
         do k = 1, klev
            row_buf(r + n_rows * (k - 1)) = row_buf(r + n_rows * (k - 1)) + (du_held(i, k) - du_mean(i, k))
            row_buf(r + n_rows * (k - 1 + klev)) = row_buf(r + n_rows * (k - 1 + klev)) &
                 + (dv_held(i, k) - dv_mean(i, k))
         end do
         row_buf(ns + r) = row_buf(ns + r) + 1.0_c_double
      end do
      call row_sum(row_buf)
      do i = 1, klon
         if (.not. kept(i)) cycle
         r = row_of(i)
         do k = 1, klev
            du_held(i, k) = du_mean(i, k) + ((du_held(i, k) - du_mean(i, k)) &
                 - row_buf(r + n_rows * (k - 1)) / row_buf(ns + r))
            dv_held(i, k) = dv_mean(i, k) + ((dv_held(i, k) - dv_mean(i, k)) &
                 - row_buf(r + n_rows * (k - 1 + klev)) / row_buf(ns + r))
         end do
      end do
    end subroutine eddies


  end subroutine nudgeml_lmdz_step

  !> out = min(max(val, tlo(j)), thi(j)) in float64, counting a clip when val is outside.
  subroutine clip_target(val, j, out)
    real(c_float), intent(in) :: val
    integer, intent(in) :: j
    real(c_double), intent(out) :: out
    out = real(val, c_double)
    if (out < tlo(j)) then
       out = tlo(j)
       n_clipped = n_clipped + 1
    else if (out > thi(j)) then
       out = thi(j)
       n_clipped = n_clipped + 1
    end if
  end subroutine clip_target

  !> This thread's counters: refreshes done, columns evaluated by the model, columns that fell
  !> back to the mean tendency, output values clipped. Sum over threads/ranks for a run total.
  subroutine nudgeml_lmdz_counts(refreshes, columns, fallbacks, clipped)
    integer(c_int64_t), intent(out) :: refreshes, columns, fallbacks, clipped
    refreshes = n_refresh
    columns = n_columns
    fallbacks = n_fallback
    clipped = n_clipped
  end subroutine nudgeml_lmdz_counts

  !> Release this thread's model and buffers; counters are reset.
  subroutine nudgeml_lmdz_final()
    if (nml_is_loaded(model)) call nml_free(model)
    call nml_trees_free(trees)
    use_trees = .false.
    if (allocated(yt)) deallocate (yt)
    if (allocated(feat_src)) deallocate (feat_src)
    if (allocated(feat_lev)) deallocate (feat_lev)
    if (allocated(flo)) deallocate (flo)
    if (allocated(fhi)) deallocate (fhi)
    if (allocated(tlo)) deallocate (tlo)
    if (allocated(thi)) deallocate (thi)
    if (allocated(xt)) deallocate (xt)
    if (allocated(du_held)) deallocate (du_held)
    if (allocated(dv_held)) deallocate (dv_held)
    if (allocated(gain)) deallocate (gain)
    if (allocated(row_of)) deallocate (row_of)
    if (allocated(row_buf)) deallocate (row_buf)
    n_rows = 0
    initialised = .false.
    holding = .false.
    mode = NUDGEML_MODE_OFF
    n_refresh = 0
    n_columns = 0
    n_fallback = 0
    n_clipped = 0
  end subroutine nudgeml_lmdz_final

end module nudgeml_lmdz
