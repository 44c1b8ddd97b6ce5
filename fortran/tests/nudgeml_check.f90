!> nudgeml_check MODEL_DIR KLEV [torchscript|aoti]
!> Initialise the LMDZ routine as LMDZ would (4 columns, 900 s step) and report. On bad input
!> (missing files, a manifest that disagrees with klev or with itself, a model of the wrong size)
!> it prints the routine's message on stderr and exits with status 2.
program nudgeml_check
  use, intrinsic :: iso_c_binding, only: c_double
  use, intrinsic :: iso_fortran_env, only: error_unit, output_unit
  use nudgeml_lmdz, only: nudgeml_lmdz_init, nudgeml_lmdz_final, NUDGEML_MODE_ML
  implicit none
  character(len=4096) :: dir, arg
  character(len=16) :: backend
  character(len=1024) :: msg
  integer :: klev, ierr, nargs

  nargs = command_argument_count()
  if (nargs < 2) then
     write (error_unit, '(a)') 'usage: nudgeml_check MODEL_DIR KLEV [torchscript|aoti]'
     error stop 1
  end if
  call get_command_argument(1, dir)
  call get_command_argument(2, arg)
  read (arg, *) klev
  backend = 'torchscript'
  if (nargs >= 3) call get_command_argument(3, backend)

  call nudgeml_lmdz_init(NUDGEML_MODE_ML, trim(dir), 4, klev, 900.0_c_double, ierr, msg, backend=trim(backend))
  if (ierr /= 0) then
     write (error_unit, '(a)') trim(msg)
     stop 2
  end if
  write (output_unit, '(a)') 'ok: ' // trim(dir) // ' loads with klev = ' // trim(arg) // ' (' // trim(backend) // ')'
  call nudgeml_lmdz_final()
end program nudgeml_check
