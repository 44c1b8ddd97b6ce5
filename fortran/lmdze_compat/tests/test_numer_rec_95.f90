! Checks of lmdze_compat's numer_rec_95 against values known in closed form. One routine per run:
!   test_numer_rec_95 <routine>     (ctest runs each as its own test; exit status 1 on a failure)
module test_functions
  implicit none
  integer, parameter :: dp = kind(1d0)
contains
  subroutine cube_minus_two(x, f, df)
    ! f(x) = x**3 - 2, root 2**(1/3)
    real, intent(in) :: x
    real, intent(out) :: f, df
    f = x**3 - 2.
    df = 3. * x**2
  end subroutine cube_minus_two

  subroutine cos_minus_x(x, f, df)
    ! f(x) = cos(x) - x, root 0.739085133215160641655... (the Dottie number)
    real(dp), intent(in) :: x
    real(dp), intent(out) :: f, df
    f = cos(x) - x
    df = -sin(x) - 1._dp
  end subroutine cos_minus_x

  subroutine step_slope(x, f, df)
    ! A function whose Newton steps leave the bracket: f = atan(10 (x - 0.3)), root 0.3
    real(dp), intent(in) :: x
    real(dp), intent(out) :: f, df
    f = atan(10._dp * (x - 0.3_dp))
    df = 10._dp / (1._dp + (10._dp * (x - 0.3_dp))**2)
  end subroutine step_slope
end module test_functions

program test_numer_rec_95
  use numer_rec_95
  use test_functions
  implicit none

  character(len=32) :: routine
  integer :: failures

  failures = 0
  call get_command_argument(1, routine)
  select case (trim(routine))
  case ("rtsafe")
    call check_close("rtsafe x**3 - 2", real(rtsafe(cube_minus_two, 0., 2., 1e-6), dp), 2._dp**(1._dp / 3), 2e-6_dp)
    call check_close("rtsafe cos x - x", rtsafe(cos_minus_x, 0._dp, 1._dp, 1d-13), 0.7390851332151607_dp, 1e-12_dp)
    call check_close("rtsafe reversed bracket", rtsafe(cos_minus_x, 1._dp, 0._dp, 1d-13), 0.7390851332151607_dp, 1e-12_dp)
    call check_close("rtsafe bisection fallback", rtsafe(step_slope, -5._dp, 5._dp, 1d-12), 0.3_dp, 1e-11_dp)
    call check_close("rtsafe root at a bound", rtsafe(cos_minus_x, 0.7390851332151607_dp, 2._dp, 1d-13), &
         0.7390851332151607_dp, 1e-15_dp)
  case ("locate")
    block
      real :: xx(4) = [1., 2., 4., 8.]
      call check_int("locate inside", locate(xx, 3.), 2)
      call check_int("locate below", locate(xx, 0.5), 0)
      call check_int("locate beyond", locate(xx, 9.), 4)
      call check_int("locate at first", locate(xx, 1.), 1)
      call check_int("locate at last", locate(xx, 8.), 3)
      call check_int("locate on a knot", locate(xx, 4.), 3)
      call check_int("locate descending", locate(xx(4:1:-1), 3.), 2)
      call check_int("locate descending beyond", locate(xx(4:1:-1), 0.5), 4)
      ! as cv30_feed calls it: a slice starting at index 3 of a decreasing pressure profile, negated
      call check_int("locate my_lbound", locate(-[900., 700., 500., 300.], -600., my_lbound=3), 4)
      call check_int("locate double", locate([0d0, 1d0, 2d0], 1.5d0), 2)
    end block
  case ("hunt")
    block
      double precision :: xx(0:9)
      integer :: i, guess, j, expected
      real(dp) :: x
      xx = [(real(i, dp)**2, i = 0, 9)]
      ! every guess (none, below, exact, above, out of range) gives locate's answer
      do guess = -2, 11
        do i = 0, 40
          x = -1._dp + 2.1_dp * i
          expected = locate(xx, x, my_lbound=0)
          j = guess
          call hunt(xx, x, j, my_lbound=0)
          if (j /= expected) then
            print *, "FAIL hunt guess", guess, "x", x, "got", j, "expected", expected
            failures = failures + 1
          end if
        end do
      end do
      call check_int("hunt inside, lbound 0", locate(xx, 10._dp, my_lbound=0), 3)
      j = 1
      call hunt(real([5., 4., 3., 2., 1.]), 2.5, j)
      call check_int("hunt descending", j, 3)
    end block
  case ("spline")
    block
      ! A clamped cubic spline reproduces a cubic exactly: y = x**3 - 2 x, y'' = 6 x.
      real :: x(5) = [0., 0.5, 1.5, 2., 3.], y(5), y2(5)
      y = x**3 - 2. * x
      y2 = spline(x, y, yp1=-2., ypn=25.)
      call check_all_close("spline clamped cubic y''", y2, 6. * x, 2e-5)
      ! natural spline through (0, 0), (1, 1), (2, 0): y''(1) = -3
      call check_all_close("spline natural", spline([0., 1., 2.], [0., 1., 0.]), [0., -3., 0.], 1e-6)
      ! a straight line: all second derivatives 0
      call check_all_close("spline line", spline([0., 1., 3., 4.], [1., 3., 7., 9.]), [0., 0., 0., 0.], 1e-6)
    end block
  case ("splint")
    block
      real :: x(5) = [0., 0.5, 1.5, 2., 3.], y(5), y2(5)
      y = x**3 - 2. * x
      y2 = spline(x, y, yp1=-2., ypn=25.)
      call check_close("splint cubic at 1.2", real(splint(x, y, y2, 1.2), dp), 1.2_dp**3 - 2.4_dp, 1e-5_dp)
      call check_close("splint cubic at 2.7", real(splint(x, y, y2, 2.7), dp), 2.7_dp**3 - 5.4_dp, 2e-5_dp)
      call check_close("splint at a knot", real(splint(x, y, y2, 1.5), dp), 1.5_dp**3 - 3._dp, 1e-6_dp)
      call check_close("splint natural at 0.5", &
           real(splint([0., 1., 2.], [0., 1., 0.], [0., -3., 0.], 0.5), dp), 0.6875_dp, 1e-6_dp)
    end block
  case ("jacobi")
    block
      real :: a(3, 3), d(3), v(3, 3), lambda
      integer :: k
      a = reshape([2., 1., 0., 1., 2., 1., 0., 1., 2.], [3, 3])
      call jacobi(a, d, v)
      ! eigenvalues of the tridiagonal (1, 2, 1) matrix: 2 + sqrt(2), 2, 2 - sqrt(2)
      call check_close("jacobi max eigenvalue", real(maxval(d), dp), 2._dp + sqrt(2._dp), 1e-6_dp)
      call check_close("jacobi min eigenvalue", real(minval(d), dp), 2._dp - sqrt(2._dp), 1e-6_dp)
      call check_close("jacobi trace", real(sum(d), dp), 6._dp, 1e-6_dp)
      do k = 1, 3
        lambda = d(k)
        call check_all_close("jacobi A v = lambda v", matmul(a, v(:, k)), lambda * v(:, k), 1e-6)
      end do
      call check_all_close("jacobi orthonormal", reshape(matmul(transpose(v), v), [9]), &
           [1., 0., 0., 0., 1., 0., 0., 0., 1.], 1e-6)
      ! a was not modified
      call check_all_close("jacobi input kept", reshape(a, [9]), [2., 1., 0., 1., 2., 1., 0., 1., 2.], 0.)
    end block
    block
      ! LMDZE's case (filtrez/inifgn.f90): the periodic second difference on n points, eigenvalues
      ! -4 sin(pi k / n)**2, k = 0 .. n - 1, all but two of them double.
      integer, parameter :: n = 64
      real :: a(n, n), d(n), v(n, n), expected(n)
      integer :: i, k
      a = 0.
      do i = 1, n
        a(i, i) = -2.
        a(i, modulo(i, n) + 1) = 1.
        a(modulo(i, n) + 1, i) = 1.
      end do
      call jacobi(a, d, v)
      call eigsrt(d, v)
      expected = [(-4. * sin(acos(-1.) * k / n)**2, k = 0, n - 1)]
      call sort_descending(expected)
      call check_all_close("jacobi periodic second difference n = 64", d, expected, 2e-5)
      call check_close("jacobi n = 64 residual", real(maxval(abs(matmul(a, v) - v * spread(d, 1, n))), dp), &
           0._dp, 2e-5_dp)
    end block
  case ("eigsrt")
    block
      real :: a(3, 3), d(3), v(3, 3)
      d = [1., 3., 2.]
      v = reshape([1., 0., 0., 0., 1., 0., 0., 0., 1.], [3, 3])
      call eigsrt(d, v)
      call check_all_close("eigsrt values descending", d, [3., 2., 1.], 0.)
      call check_all_close("eigsrt vectors follow", reshape(v, [9]), [0., 1., 0., 0., 0., 1., 1., 0., 0.], 0.)
      a = reshape([2., 1., 0., 1., 2., 1., 0., 1., 2.], [3, 3])
      call jacobi(a, d, v)
      call eigsrt(d, v)
      call check_all_close("eigsrt after jacobi", d, [2. + sqrt(2.), 2., 2. - sqrt(2.)], 1e-6)
      ! eigenvector of 2 + sqrt(2): (1, sqrt(2), 1) / 2, up to sign
      call check_all_close("eigsrt first vector", abs(v(:, 1)), [0.5, sqrt(0.5), 0.5], 1e-6)
    end block
  case ("nr_erf")
    call check_close("nr_erf(0.5)", real(nr_erf(0.5), dp), 0.5204998778130465_dp, 1e-7_dp)
    call check_close("nr_erf(1)", nr_erf(1._dp), 0.8427007929497149_dp, 1e-15_dp)
    call check_close("nr_erf(-2)", nr_erf(-2._dp), -0.9953222650189527_dp, 1e-15_dp)
    call check_close("nr_erf(0)", real(nr_erf(0.), dp), 0._dp, 0._dp)
  case ("regr")
    block
      real :: vt(2, 1, 1), f(3, 1, 1)
      real :: v3(1, 1, 2)
      call check_all_close("regr1_lint", regr1_lint([0., 10., 20.], [0., 1., 3.], [0.5, 2., 4., -1.]), &
           [5., 15., 25., -10.], 1e-6)
      call check_all_close("regr1_step_av", regr1_step_av([1., 3.], [0., 1., 2.], [0., 0.5, 1.5, 2.]), &
           [1., 2., 3.], 1e-6)
      f(:, 1, 1) = [1., 2., 4.]
      call regr1_conserv(f, xs=[0., 1., 2., 3.], xt=[0., 1.5, 3.], vt=vt)
      call check_all_close("regr1_conserv", vt(:, 1, 1), [4. / 3., 10. / 3.], 1e-6)
      ! centred slope in the middle interval, (4 - 1) / (2.5 - 0.5); zero at the ends
      call check_all_close("slopes", reshape(slopes(f, [0., 1., 2., 3.]), [3]), [0., 1.5, 0.], 1e-6)
      call regr1_conserv(f, xs=[0., 1., 2., 3.], xt=[0., 1.5, 3.], vt=vt, slope=slopes(f, [0., 1., 2., 3.]))
      call check_all_close("regr1_conserv with slopes", vt(:, 1, 1), [1.8125 / 1.5, 5.1875 / 1.5], 1e-6)
      call check_close("regr1_conserv conserves", real(1.5 * sum(vt), dp), 7._dp, 1e-5_dp)
      v3 = regr3_lint(reshape([0., 30.], [1, 1, 2]), [0., 30.], [15., 45.])
      call check_all_close("regr3_lint", reshape(v3, [2]), [15., 45.], 1e-6)
    end block
  case default
    print *, "usage: test_numer_rec_95 rtsafe|locate|hunt|spline|splint|jacobi|eigsrt|nr_erf|regr"
    error stop 2
  end select
  if (failures > 0) then
    print *, failures, "check(s) failed"
    error stop 1
  end if
  print *, "all checks passed: ", trim(routine)

contains

  subroutine check_close(name, got, expected, tol)
    character(len=*), intent(in) :: name
    real(dp), intent(in) :: got, expected, tol
    if (abs(got - expected) > tol .or. got /= got) then
      print *, "FAIL ", name, ": got", got, "expected", expected, "tolerance", tol
      failures = failures + 1
    else
      print *, "ok   ", name
    end if
  end subroutine check_close

  subroutine check_all_close(name, got, expected, tol)
    character(len=*), intent(in) :: name
    real, intent(in) :: got(:), expected(:), tol
    if (size(got) /= size(expected)) then
      print *, "FAIL ", name, ": sizes", size(got), size(expected)
      failures = failures + 1
    else if (any(abs(got - expected) > tol) .or. any(got /= got)) then
      print *, "FAIL ", name, ": got", got, "expected", expected, "tolerance", tol
      failures = failures + 1
    else
      print *, "ok   ", name
    end if
  end subroutine check_all_close

  subroutine sort_descending(x)
    real, intent(inout) :: x(:)
    integer :: i, k
    real :: tmp
    do i = 1, size(x) - 1
      k = i - 1 + maxloc(x(i:), dim=1)
      tmp = x(i)
      x(i) = x(k)
      x(k) = tmp
    end do
  end subroutine sort_descending

  subroutine check_int(name, got, expected)
    character(len=*), intent(in) :: name
    integer, intent(in) :: got, expected
    if (got /= expected) then
      print *, "FAIL ", name, ": got", got, "expected", expected
      failures = failures + 1
    else
      print *, "ok   ", name
    end if
  end subroutine check_int

end program test_numer_rec_95
