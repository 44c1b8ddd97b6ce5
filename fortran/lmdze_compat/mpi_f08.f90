! The part of the MPI Fortran 2008 bindings (module mpi_f08) that LMDZE's dyn3d/gcm.f90 calls. LMDZE
! is serial: it calls MPI only to start, to check that it runs on one process, and to stop (XIOS
! needs MPI; nudgeml builds XIOS as a no-op, lmdze_compat/xios.f90). This stub is one process:
! MPI_Comm_size gives 1 and MPI_Abort stops the program with the error code.
module mpi_f08

  implicit none

  private
  public :: mpi_comm, mpi_comm_world, mpi_init, mpi_finalize, mpi_comm_size, mpi_abort

  type mpi_comm
     integer :: mpi_val = 0
  end type mpi_comm

  type(mpi_comm), parameter :: mpi_comm_world = mpi_comm(0)

contains

  subroutine mpi_init(ierror)
    integer, intent(out), optional :: ierror
    if (present(ierror)) ierror = 0
  end subroutine mpi_init

  subroutine mpi_finalize(ierror)
    integer, intent(out), optional :: ierror
    if (present(ierror)) ierror = 0
  end subroutine mpi_finalize

  subroutine mpi_comm_size(comm, size, ierror)
    type(mpi_comm), intent(in) :: comm
    integer, intent(out) :: size
    integer, intent(out), optional :: ierror
    size = 1
    if (present(ierror)) ierror = 0
  end subroutine mpi_comm_size

  subroutine mpi_abort(comm, errorcode, ierror)
    type(mpi_comm), intent(in) :: comm
    integer, intent(in) :: errorcode
    integer, intent(out), optional :: ierror
    if (present(ierror)) ierror = 0
    error stop errorcode
  end subroutine mpi_abort

end module mpi_f08
