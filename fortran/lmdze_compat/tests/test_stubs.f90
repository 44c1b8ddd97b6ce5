! The MPI and XIOS stand-ins accept LMDZE's calls (dyn3d/gcm.f90, phylmd/init_iophy.f90,
! time_phylmdz.f90, histwrite_phy_xios.f90, same keywords); `test_stubs abort` must end with the
! status passed to mpi_abort.
program test_stubs
  use mpi_f08, only: mpi_init, mpi_finalize, mpi_comm_size, mpi_comm_world, mpi_abort
  use xios, only: xios_initialize, xios_finalize, xios_context_initialize, xios_context_finalize, &
       xios_set_axis_attr, xios_set_domain_attr, xios_duration, xios_close_context_definition, &
       xios_date, xios_define_calendar, xios_update_calendar, xios_send_field
  implicit none
  integer :: n_proc, return_comm
  character(len=16) :: mode
  type(xios_duration) :: dtime
  real :: field2(4, 3), field3(4, 3, 2)

  call get_command_argument(1, mode)
  call mpi_init
  call mpi_comm_size(mpi_comm_world, n_proc)
  if (n_proc /= 1) error stop "mpi stub: more than one process"
  if (mode == "abort") call mpi_abort(mpi_comm_world, errorcode = 3)
  return_comm = -1
  call xios_initialize("LMDZE", return_comm = return_comm)
  if (return_comm == -1) error stop "xios_initialize did not set return_comm"
  call xios_context_initialize("LMDZE_context", return_comm)
  dtime%second = 900.
  call xios_define_calendar(type = "D360", timestep = dtime, time_origin = xios_date(2000, 1, 1, 0, 0, 0), &
       start_date = xios_date(2000, 1, 1, 0, 0, 0))
  call xios_set_domain_attr("dom_glo", type = "rectilinear", ni_glo = 4, nj_glo = 3, &
       lonvalue_1d = [0d0, 90d0, 180d0, 270d0], latvalue_1d = [90d0, 0d0, -90d0])
  call xios_set_axis_attr("presnivs", n_glo = 2, value = [1000d0, 500d0])
  call xios_close_context_definition
  call xios_update_calendar(1)
  field2 = 1.
  field3 = 2.
  call xios_send_field("temp", field2)
  call xios_send_field("temp", field3)
  call xios_context_finalize
  call xios_finalize
  call mpi_finalize
  print *, "stubs: all calls accepted"
end program test_stubs
