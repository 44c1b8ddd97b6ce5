! The part of the XIOS Fortran interface LMDZE calls, as no-ops. LMDZE writes all its history through
! the IOIPSL copy inside its own tree; XIOS carries only one field ("temp", phylmd/physiq.f90) to a
! file described by an XIOS XML context. XIOS itself is a C++/MPI library from the IPSL SVN, too
! heavy for the builds nudgeml makes, so this module accepts the same calls and writes nothing: the
! "temp" XIOS output is dropped, every IOIPSL history file is written as usual.
module xios

  implicit none

  private
  public :: xios_date, xios_duration
  public :: xios_initialize, xios_finalize, xios_context_initialize, xios_context_finalize
  public :: xios_define_calendar, xios_set_domain_attr, xios_set_axis_attr
  public :: xios_close_context_definition, xios_update_calendar, xios_send_field

  integer, parameter :: dp = kind(1d0)

  ! Same components as XIOS's types, so that structure constructors and component access compile.
  type xios_date
     integer :: year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0
  end type xios_date

  type xios_duration
     real(dp) :: year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, timestep = 0
  end type xios_duration

contains

  subroutine xios_initialize(client_id, local_comm, return_comm)
    character(len=*), intent(in) :: client_id
    integer, intent(in), optional :: local_comm
    integer, intent(out), optional :: return_comm
    ! A serial run has one communicator; its handle is never used by LMDZE beyond this module.
    if (present(return_comm)) return_comm = 0
  end subroutine xios_initialize

  subroutine xios_finalize()
  end subroutine xios_finalize

  subroutine xios_context_initialize(context_id, comm)
    character(len=*), intent(in) :: context_id
    integer, intent(in) :: comm
  end subroutine xios_context_initialize

  subroutine xios_context_finalize()
  end subroutine xios_context_finalize

  subroutine xios_define_calendar(type, timestep, start_date, time_origin)
    character(len=*), intent(in) :: type
    type(xios_duration), intent(in), optional :: timestep
    type(xios_date), intent(in), optional :: start_date, time_origin
  end subroutine xios_define_calendar

  subroutine xios_set_domain_attr(domain_id, type, ni_glo, nj_glo, lonvalue_1d, latvalue_1d)
    character(len=*), intent(in) :: domain_id
    character(len=*), intent(in), optional :: type
    integer, intent(in), optional :: ni_glo, nj_glo
    real(dp), intent(in), optional :: lonvalue_1d(:), latvalue_1d(:)
  end subroutine xios_set_domain_attr

  subroutine xios_set_axis_attr(axis_id, n_glo, value)
    character(len=*), intent(in) :: axis_id
    integer, intent(in), optional :: n_glo
    real(dp), intent(in), optional :: value(:)
  end subroutine xios_set_axis_attr

  subroutine xios_close_context_definition()
  end subroutine xios_close_context_definition

  subroutine xios_update_calendar(step)
    integer, intent(in) :: step
  end subroutine xios_update_calendar

  subroutine xios_send_field(field_id, field)
    ! Any rank and kind (XIOS has one specific per rank; the data are dropped here).
    character(len=*), intent(in) :: field_id
    type(*), intent(in) :: field(..)
  end subroutine xios_send_field

end module xios
