! nudgeml's record of the increments LMDZE's nudging applies (issue 15: "record the applied increments").
!
! LMDZE's guide relaxes ucov, vcov, teta and q toward the analyses at every Matsuno step (every iperiod
! dynamical steps) and writes only the state and the next analysis every 6 h, so the increments
! cannot be rebuilt from its files. nudgeml_build (src/nudgeml/lmdze_build.py) adds two calls around
! the relaxation in the build copy of guide.f90: nudgeml_guide_before saves the fields, and
! nudgeml_guide_after adds what the relaxation changed (after - before: what the model applied, not a
! formula) to a sum over the 6-hour window [k day_step/4, (k + 1) day_step/4). At the window's last
! call it writes, with LMDZE's writefield (one record per window, files <name>.nc):
!   du_guide, dv_guide, dteta_guide, dq_guide  the window's summed increments of ucov, vcov, teta, q;
!   du_guide0, dv_guide0, dteta_guide0, dq_guide0  the increments of the window's first call (tau = 0: the
!     target is then the analysis of the window start, so a test can check them against
!     alpha * (analysis - state) from LMDZE's own 6-hourly files);
!   ucov_guide_state, vcov_guide_state, teta_guide_state, q_guide_state  the state just before that first call
!     (LMDZE itself writes ucov and teta there, not vcov).
module nudgeml_guide_diag_m

  use conf_gcm_m, only: day_step, iperiod
  use writefield_m, only: writefield

  implicit none
  private
  public nudgeml_guide_before, nudgeml_guide_after

  real, allocatable, save:: u0(:, :, :), v0(:, :, :), t0(:, :, :), q0(:, :, :)
  real, allocatable, save:: du(:, :, :), dv(:, :, :), dt(:, :, :), dq(:, :, :)

contains

  subroutine nudgeml_guide_before(ucov, vcov, teta, q)
    real, intent(in):: ucov(:, :, :), vcov(:, :, :), teta(:, :, :), q(:, :, :)

    if (.not. allocated(u0)) then
       allocate(u0, mold = ucov)
       allocate(du, mold = ucov)
       allocate(v0, mold = vcov)
       allocate(dv, mold = vcov)
       allocate(t0, mold = teta)
       allocate(dt, mold = teta)
       allocate(q0, mold = q)
       allocate(dq, mold = q)
       du = 0.
       dv = 0.
       dt = 0.
       dq = 0.
    end if
    u0 = ucov
    v0 = vcov
    t0 = teta
    q0 = q
  end subroutine nudgeml_guide_before

  subroutine nudgeml_guide_after(itau, ucov, vcov, teta, q)
    integer, intent(in):: itau
    real, intent(in):: ucov(:, :, :), vcov(:, :, :), teta(:, :, :), q(:, :, :)
    integer window

    window = day_step / 4
    if (mod(itau, window) == 0) then ! the window's first call
       call writefield("du_guide0", ucov - u0)
       call writefield("dv_guide0", vcov - v0)
       call writefield("dteta_guide0", teta - t0)
       call writefield("dq_guide0", q - q0)
       call writefield("ucov_guide_state", u0)
       call writefield("vcov_guide_state", v0)
       call writefield("teta_guide_state", t0)
       call writefield("q_guide_state", q0)
    end if
    du = du + (ucov - u0)
    dv = dv + (vcov - v0)
    dt = dt + (teta - t0)
    dq = dq + (q - q0)
    if (mod(itau + iperiod, window) == 0) then ! the window's last call
       call writefield("du_guide", du)
       call writefield("dv_guide", dv)
       call writefield("dteta_guide", dt)
       call writefield("dq_guide", dq)
       du = 0.
       dv = 0.
       dt = 0.
       dq = 0.
    end if
  end subroutine nudgeml_guide_after

end module nudgeml_guide_diag_m
