#!/bin/sh
# Slurm Epilog: the job is over; stop containing it. A failure here must not
# fail the epilog (the daemon also forgets cgroups that disappear).
set -u
: "${SLURM_JOB_ID:?SLURM_JOB_ID not set}"
PYCONTAIN=${PYCONTAIN:-pycontain}
"$PYCONTAIN" release "job-${SLURM_JOB_ID}" || echo "pycontain release job-${SLURM_JOB_ID} failed (ignored)" >&2
exit 0
