! The numerical routines LMDZE takes from the Numer_Rec_95 library (hosted on a GitLab that is not
! reachable from where nudgeml builds LMDZE), written here from the mathematics with the interfaces
! LMDZE calls them with (module numer_rec_95, keyword names included). Default real is what LMDZE
! passes; rtsafe, hunt and locate also take double precision (dyn3d/invert_zoom_x.f90).
!
!   rtsafe         root of f in a bracket: Newton steps, bisection when Newton leaves the bracket
!   locate, hunt   interval of a monotonic table holding x (hunt: starting from a guess)
!   spline, splint cubic spline (second derivatives, then evaluation)
!   jacobi, eigsrt eigen-decomposition of a symmetric matrix (cyclic Jacobi), sorted descending
!   nr_erf         error function
!   regr1_lint, regr3_lint, regr1_step_av, regr1_conserv, slopes
!                  1-D regridding (linear, step-function average, conservative with slopes), used
!                  only by the Cariolle ozone tracer (nqmx >= 5)
module numer_rec_95

  implicit none

  private
  public :: rtsafe, hunt, locate, spline, splint, jacobi, eigsrt, nr_erf
  public :: regr1_lint, regr3_lint, regr1_step_av, regr1_conserv, slopes

  integer, parameter :: sp = kind(1.0), dp = kind(1d0)
  integer, parameter :: max_newton_iter = 200, max_jacobi_sweeps = 100

  interface rtsafe
     module procedure rtsafe_sp, rtsafe_dp
  end interface rtsafe

  interface hunt
     module procedure hunt_sp, hunt_dp
  end interface hunt

  interface locate
     module procedure locate_sp, locate_dp
  end interface locate

  interface nr_erf
     module procedure nr_erf_sp, nr_erf_dp
  end interface nr_erf

contains

  ! --------------------------------------------------------------------- roots

  real(dp) function rtsafe_dp(funcd, x1, x2, xacc) result(x)
    ! Root of f in [x1, x2] (f(x1) and f(x2) of opposite signs or zero), to within xacc.
    ! Newton's step is taken when it stays inside the current bracket and at least halves the
    ! step before last; otherwise the bracket is bisected. The bracket always holds the root.
    integer, parameter :: wp = dp
    include "rtsafe_body.inc"
  end function rtsafe_dp

  real(sp) function rtsafe_sp(funcd, x1, x2, xacc) result(x)
    ! Same method as rtsafe_dp, in default real (the function LMDZE passes is default real).
    integer, parameter :: wp = sp
    include "rtsafe_body.inc"
  end function rtsafe_sp

  ! ------------------------------------------------------------ table search

  ! Convention (that of LMDZE's callers): for a monotonic table xx(1:n), the result j satisfies
  ! xx(j) <= x < xx(j + 1) (ascending; reversed inequalities for a descending table), with j = 0
  ! below the first value, j = n beyond the last, and j = n - 1 for x == xx(n). With my_lbound,
  ! indices are those of a table whose first index is my_lbound (the caller's xx(my_lbound:)).

  integer function bracket_dp(xx, x, j_lo_in, j_hi_in) result(j_lo)
    ! Bisect between j_lo_in (0 or a "<=" index) and j_hi_in (n + 1 or a ">" index).
    real(dp), intent(in) :: xx(:), x
    integer, intent(in) :: j_lo_in, j_hi_in
    integer :: j_hi, j_mid, n
    logical :: ascending

    n = size(xx)
    ascending = xx(n) >= xx(1)
    j_lo = j_lo_in
    j_hi = j_hi_in
    do while (j_hi - j_lo > 1)
       j_mid = (j_hi + j_lo) / 2
       if (ascending .eqv. (x >= xx(j_mid))) then
          j_lo = j_mid
       else
          j_hi = j_mid
       end if
    end do
    if (x == xx(n)) j_lo = n - 1
    if (x == xx(1)) j_lo = 1
  end function bracket_dp

  integer function locate_dp(xx, x, my_lbound) result(j)
    real(dp), intent(in) :: xx(:), x
    integer, intent(in), optional :: my_lbound
    integer :: shift

    shift = 0
    if (present(my_lbound)) shift = my_lbound - 1
    if (size(xx) < 2) error stop "locate: the table needs at least two values"
    j = bracket_dp(xx, x, 0, size(xx) + 1) + shift
  end function locate_dp

  integer function locate_sp(xx, x, my_lbound) result(j)
    ! Converting default reals to double precision is exact, so comparisons are unchanged.
    real(sp), intent(in) :: xx(:), x
    integer, intent(in), optional :: my_lbound

    j = locate_dp(real(xx, dp), real(x, dp), my_lbound)
  end function locate_sp

  subroutine hunt_dp(xx, x, jlo, my_lbound)
    ! Same result as locate, found by expanding steps (1, 2, 4, ...) from the guess jlo, which pays
    ! when successive calls look up nearby values. A guess outside the table means no guess.
    real(dp), intent(in) :: xx(:), x
    integer, intent(inout) :: jlo
    integer, intent(in), optional :: my_lbound
    integer :: shift, n, j, j_lo, j_hi, step
    logical :: ascending

    shift = 0
    if (present(my_lbound)) shift = my_lbound - 1
    n = size(xx)
    if (n < 2) error stop "hunt: the table needs at least two values"
    ascending = xx(n) >= xx(1)
    j = jlo - shift
    if (j < 1 .or. j > n) then
       j_lo = 0
       j_hi = n + 1
    else if (ascending .eqv. (x >= xx(j))) then
       ! x at or beyond xx(j): hunt upwards
       j_lo = j
       step = 1
       do
          j_hi = j_lo + step
          if (j_hi > n) then
             j_hi = n + 1
             exit
          end if
          if (.not. (ascending .eqv. (x >= xx(j_hi)))) exit
          j_lo = j_hi
          step = 2 * step
       end do
    else
       ! x before xx(j): hunt downwards
       j_hi = j
       step = 1
       do
          j_lo = j_hi - step
          if (j_lo < 1) then
             j_lo = 0
             exit
          end if
          if (ascending .eqv. (x >= xx(j_lo))) exit
          j_hi = j_lo
          step = 2 * step
       end do
    end if
    jlo = bracket_dp(xx, x, j_lo, j_hi) + shift
  end subroutine hunt_dp

  subroutine hunt_sp(xx, x, jlo, my_lbound)
    real(sp), intent(in) :: xx(:), x
    integer, intent(inout) :: jlo
    integer, intent(in), optional :: my_lbound

    call hunt_dp(real(xx, dp), real(x, dp), jlo, my_lbound)
  end subroutine hunt_sp

  ! ------------------------------------------------------------ cubic spline

  function spline(x, y, yp1, ypn) result(y2)
    ! Second derivatives y2 of the cubic spline through (x(i), y(i)), x strictly monotonic: the
    ! first derivative is continuous at the knots, which gives a tridiagonal system
    !   h(i-1) y2(i-1) + 2 (h(i-1) + h(i)) y2(i) + h(i) y2(i+1) = 6 (s(i) - s(i-1)),
    ! h(i) = x(i+1) - x(i), s(i) = (y(i+1) - y(i)) / h(i), closed at each end either by the given
    ! end slope (yp1, ypn) or by y2 = 0 there (natural spline). Solved by Gaussian elimination
    ! without pivoting (the matrix is diagonally dominant).
    real(sp), intent(in) :: x(:), y(:)
    real(sp), intent(in), optional :: yp1, ypn
    real(sp) :: y2(size(x))
    real(dp) :: diag(size(x)), upper(size(x)), lower(size(x)), rhs(size(x)), h(size(x) - 1), s(size(x) - 1)
    integer :: n, i
    real(dp) :: m

    n = size(x)
    if (size(y) /= n) error stop "spline: x and y differ in size"
    if (n < 2) error stop "spline: needs at least two points"
    h = real(x(2:), dp) - real(x(:n - 1), dp)
    if (any(h == 0._dp)) error stop "spline: two equal abscissas"
    s = (real(y(2:), dp) - real(y(:n - 1), dp)) / h
    lower = 0._dp
    upper = 0._dp
    do i = 2, n - 1
       lower(i) = h(i - 1)
       diag(i) = 2._dp * (h(i - 1) + h(i))
       upper(i) = h(i)
       rhs(i) = 6._dp * (s(i) - s(i - 1))
    end do
    if (present(yp1)) then
       diag(1) = 2._dp * h(1)
       upper(1) = h(1)
       rhs(1) = 6._dp * (s(1) - yp1)
    else
       diag(1) = 1._dp
       rhs(1) = 0._dp
    end if
    if (present(ypn)) then
       lower(n) = h(n - 1)
       diag(n) = 2._dp * h(n - 1)
       rhs(n) = 6._dp * (ypn - s(n - 1))
    else
       diag(n) = 1._dp
       rhs(n) = 0._dp
    end if
    ! Forward elimination, then back substitution (Thomas algorithm).
    do i = 2, n
       m = lower(i) / diag(i - 1)
       diag(i) = diag(i) - m * upper(i - 1)
       rhs(i) = rhs(i) - m * rhs(i - 1)
    end do
    rhs(n) = rhs(n) / diag(n)
    do i = n - 1, 1, -1
       rhs(i) = (rhs(i) - upper(i) * rhs(i + 1)) / diag(i)
    end do
    y2 = real(rhs, sp)
  end function spline

  real(sp) function splint(xa, ya, y2a, x) result(y)
    ! Value at x of the cubic spline with knots (xa, ya) and second derivatives y2a (from spline);
    ! outside the knots, the cubic of the end interval is extended.
    real(sp), intent(in) :: xa(:), ya(:), y2a(:), x
    integer :: k, n
    real(dp) :: h, a, b

    n = size(xa)
    if (size(ya) /= n .or. size(y2a) /= n) error stop "splint: xa, ya and y2a differ in size"
    k = min(max(locate(xa, x), 1), n - 1)
    h = real(xa(k + 1), dp) - real(xa(k), dp)
    a = (real(xa(k + 1), dp) - x) / h
    b = (x - real(xa(k), dp)) / h
    y = real(a * ya(k) + b * ya(k + 1) &
         + ((a**3 - a) * y2a(k) + (b**3 - b) * y2a(k + 1)) * h**2 / 6._dp, sp)
  end function splint

  ! ----------------------------------------------------- symmetric eigenproblem

  subroutine jacobi(a, d, v)
    ! Eigenvalues d and eigenvectors (columns of v) of the symmetric matrix a, by cyclic Jacobi
    ! rotations: each rotation in the (p, q) plane, angle phi with
    !   cot(2 phi) = (a(q,q) - a(p,p)) / (2 a(p,q)),
    ! zeroes a(p,q); sweeps repeat until the off-diagonal part is negligible against the norm.
    ! Works in double precision on a copy (a is left unchanged).
    real(sp), intent(in) :: a(:, :)
    real(sp), intent(out) :: d(:), v(:, :)
    real(dp) :: b(size(a, 1), size(a, 1)), w(size(a, 1), size(a, 1))
    real(dp) :: theta, t, c, s, off, scale, bp, bq
    integer :: n, p, q, r, sweep

    n = size(a, 1)
    if (size(a, 2) /= n .or. size(d) /= n .or. size(v, 1) /= n .or. size(v, 2) /= n) &
         error stop "jacobi: a, d and v have inconsistent shapes"
    b = real(a, dp)
    w = 0._dp
    do p = 1, n
       w(p, p) = 1._dp
    end do
    scale = sqrt(sum(b**2))
    do sweep = 1, max_jacobi_sweeps
       off = 0._dp
       do q = 2, n
          off = off + sum(b(:q - 1, q)**2)
       end do
       if (sqrt(off) <= epsilon(1._dp) * scale * 1e-3_dp .or. off == 0._dp) exit
       do p = 1, n - 1
          do q = p + 1, n
             if (b(p, q) == 0._dp) cycle
             theta = (b(q, q) - b(p, p)) / (2._dp * b(p, q))
             t = sign(1._dp, theta) / (abs(theta) + sqrt(theta**2 + 1._dp))
             c = 1._dp / sqrt(t**2 + 1._dp)
             s = t * c
             ! b <- J^T b J, J the rotation (J(p,p) = J(q,q) = c, J(p,q) = s, J(q,p) = -s)
             do r = 1, n
                bp = b(r, p)
                bq = b(r, q)
                b(r, p) = c * bp - s * bq
                b(r, q) = s * bp + c * bq
             end do
             do r = 1, n
                bp = b(p, r)
                bq = b(q, r)
                b(p, r) = c * bp - s * bq
                b(q, r) = s * bp + c * bq
             end do
             b(p, q) = 0._dp
             b(q, p) = 0._dp
             do r = 1, n
                bp = w(r, p)
                bq = w(r, q)
                w(r, p) = c * bp - s * bq
                w(r, q) = s * bp + c * bq
             end do
          end do
       end do
    end do
    if (sweep > max_jacobi_sweeps) error stop "jacobi: no convergence"
    do p = 1, n
       d(p) = real(b(p, p), sp)
    end do
    v = real(w, sp)
  end subroutine jacobi

  subroutine eigsrt(d, v)
    ! Sort the eigenvalues d in descending order, moving the columns of v along (selection sort).
    real(sp), intent(inout) :: d(:), v(:, :)
    integer :: i, k, n
    real(sp) :: tmp, col(size(v, 1))

    n = size(d)
    if (size(v, 2) /= n) error stop "eigsrt: d and v have inconsistent shapes"
    do i = 1, n - 1
       k = i - 1 + maxloc(d(i:), dim=1)
       if (k /= i) then
          tmp = d(i)
          d(i) = d(k)
          d(k) = tmp
          col = v(:, i)
          v(:, i) = v(:, k)
          v(:, k) = col
       end if
    end do
  end subroutine eigsrt

  ! ---------------------------------------------------------- error function

  elemental real(sp) function nr_erf_sp(x)
    ! The Fortran 2008 intrinsic, correctly rounded by the compiler's libm.
    real(sp), intent(in) :: x
    nr_erf_sp = erf(x)
  end function nr_erf_sp

  elemental real(dp) function nr_erf_dp(x)
    real(dp), intent(in) :: x
    nr_erf_dp = erf(x)
  end function nr_erf_dp

  ! -------------------------------------------------------------- regridding

  function regr1_lint(vs, xs, xt) result(vt)
    ! Linear interpolation of vs(xs) (xs monotonic) at xt; beyond xs, the end segments extend.
    real(sp), intent(in) :: vs(:), xs(:), xt(:)
    real(sp) :: vt(size(xt))
    integer :: i, k, n

    n = size(xs)
    if (size(vs) /= n) error stop "regr1_lint: vs and xs differ in size"
    do i = 1, size(xt)
       k = min(max(locate(xs, xt(i)), 1), n - 1)
       vt(i) = vs(k) + (vs(k + 1) - vs(k)) * (xt(i) - xs(k)) / (xs(k + 1) - xs(k))
    end do
  end function regr1_lint

  function regr3_lint(vs, xs, xt) result(vt)
    ! regr1_lint along the third dimension of vs, at every (i, j).
    real(sp), intent(in) :: vs(:, :, :), xs(:), xt(:)
    real(sp) :: vt(size(vs, 1), size(vs, 2), size(xt))
    integer :: i, k, n
    real(sp) :: w

    n = size(xs)
    if (size(vs, 3) /= n) error stop "regr3_lint: size(vs, 3) /= size(xs)"
    do i = 1, size(xt)
       k = min(max(locate(xs, xt(i)), 1), n - 1)
       w = (xt(i) - xs(k)) / (xs(k + 1) - xs(k))
       vt(:, :, i) = (1. - w) * vs(:, :, k) + w * vs(:, :, k + 1)
    end do
  end function regr3_lint

  function regr1_step_av(vs, xs, xt) result(vt)
    ! vs is a step function: vs(i) on [xs(i), xs(i+1)], xs ascending edges. Result: its mean over
    ! each target interval [xt(j), xt(j+1)] (xt ascending edges inside [xs(1), xs(n)]).
    real(sp), intent(in) :: vs(:), xs(:), xt(:)
    real(sp) :: vt(size(xt) - 1)
    integer :: i, j
    real(dp) :: lo, hi, acc

    if (size(xs) /= size(vs) + 1) error stop "regr1_step_av: size(xs) /= size(vs) + 1"
    if (xt(1) < xs(1) .or. xt(size(xt)) > xs(size(xs))) &
         error stop "regr1_step_av: target edges outside the source edges"
    do j = 1, size(xt) - 1
       acc = 0._dp
       do i = 1, size(vs)
          lo = max(real(xs(i), dp), real(xt(j), dp))
          hi = min(real(xs(i + 1), dp), real(xt(j + 1), dp))
          if (hi > lo) acc = acc + (hi - lo) * vs(i)
       end do
       vt(j) = real(acc / (real(xt(j + 1), dp) - real(xt(j), dp)), sp)
    end do
  end function regr1_step_av

  function slopes(f, x) result(slope)
    ! Slopes along the first dimension of f, f(i, :, :) the mean over [x(i), x(i+1)]: centred
    ! difference between the neighbours' midpoints, zero in the two end intervals.
    real(sp), intent(in) :: f(:, :, :), x(:)
    real(sp) :: slope(size(f, 1), size(f, 2), size(f, 3))
    real(sp) :: xmid(size(x) - 1)
    integer :: i, n

    n = size(f, 1)
    if (size(x) /= n + 1) error stop "slopes: size(x) /= size(f, 1) + 1"
    xmid = 0.5 * (x(:n) + x(2:))
    slope = 0.
    do i = 2, n - 1
       slope(i, :, :) = (f(i + 1, :, :) - f(i - 1, :, :)) / (xmid(i + 1) - xmid(i - 1))
    end do
  end function slopes

  subroutine regr1_conserv(vs, xs, xt, vt, slope)
    ! Conservative regridding along the first dimension: on source interval i, [xs(i), xs(i+1)],
    ! the field is vs(i) + slope(i) (x - xmid(i)) (slope 0 when absent), whose mean is vs(i); the
    ! result is its mean over each target interval [xt(j), xt(j+1)]. Edges ascending, the target
    ! inside the source.
    real(sp), intent(in) :: vs(:, :, :), xs(:), xt(:)
    real(sp), intent(out) :: vt(:, :, :)
    real(sp), intent(in), optional :: slope(:, :, :)
    integer :: i, j
    real(sp) :: lo, hi, xmid
    real(dp) :: acc(size(vs, 2), size(vs, 3))

    if (size(xs) /= size(vs, 1) + 1) error stop "regr1_conserv: size(xs) /= size(vs, 1) + 1"
    if (size(vt, 1) /= size(xt) - 1 .or. size(vt, 2) /= size(vs, 2) .or. size(vt, 3) /= size(vs, 3)) &
         error stop "regr1_conserv: vt has the wrong shape"
    if (xt(1) < xs(1) .or. xt(size(xt)) > xs(size(xs))) &
         error stop "regr1_conserv: target edges outside the source edges"
    do j = 1, size(xt) - 1
       acc = 0._dp
       do i = 1, size(vs, 1)
          lo = max(xs(i), xt(j))
          hi = min(xs(i + 1), xt(j + 1))
          if (hi <= lo) cycle
          if (present(slope)) then
             xmid = 0.5 * (xs(i) + xs(i + 1))
             acc = acc + (hi - lo) * (vs(i, :, :) + slope(i, :, :) * (0.5 * (lo + hi) - xmid))
          else
             acc = acc + (hi - lo) * vs(i, :, :)
          end if
       end do
       vt(j, :, :) = real(acc / (xt(j + 1) - xt(j)), sp)
    end do
  end subroutine regr1_conserv

end module numer_rec_95
