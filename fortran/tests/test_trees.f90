!> Tree path of the Fortran bridge (tests/test_bridge.py): test_trees MODEL_DIR NF NT N X.bin Y.bin
!> reads xt(NF, N) float32 (stream), runs the compiled trees, writes yt(NT, N); exits 1 with the
!> message on any error. Also checks that a wrong shape is refused with a message.
program test_trees
  use, intrinsic :: iso_c_binding, only: c_float
  use nudgeml_trees
  implicit none
  character(len=4096) :: model_dir, xfile, yfile, arg
  character(len=512) :: msg
  integer :: nf, nt, n, status, u
  real(c_float), allocatable :: xt(:, :), yt(:, :), bad(:, :)
  type(nml_trees) :: trees

  call get_command_argument(1, model_dir)
  call get_command_argument(2, arg); read (arg, *) nf
  call get_command_argument(3, arg); read (arg, *) nt
  call get_command_argument(4, arg); read (arg, *) n
  call get_command_argument(5, xfile)
  call get_command_argument(6, yfile)
  allocate (xt(nf, n), yt(nt, n), bad(nf + 1, n))
  open (newunit=u, file=trim(xfile), access='stream', form='unformatted', status='old', action='read')
  read (u) xt
  close (u)
  call nml_trees_load(model_dir, trees, status, msg, n_features=nf, n_targets=nt)
  if (status /= NML_TREES_OK) call die(msg)
  call nml_trees_forward_t(trees, bad, yt, status, msg)
  if (status /= NML_TREES_ERR_SHAPE) call die('a wrong feature count was not refused')
  print '(a)', 'refused as expected: ' // trim(msg)
  call nml_trees_forward_t(trees, xt, yt, status, msg)
  if (status /= NML_TREES_OK) call die(msg)
  open (newunit=u, file=trim(yfile), access='stream', form='unformatted', status='replace', action='write')
  write (u) yt
  close (u)
  call nml_trees_free(trees)
  call nml_trees_load(trim(model_dir) // '/missing', trees, status, msg)
  if (status /= NML_TREES_ERR_IO) call die('a missing library was not refused')
  print '(a)', 'refused as expected: ' // trim(msg)

contains
  subroutine die(why)
    character(len=*), intent(in) :: why
    print '(a)', 'test_trees: ' // trim(why)
    error stop 1
  end subroutine die
end program test_trees
