#!/bin/sh
# Slurm Prolog (runs as root on the compute node before the job starts):
# hand the job's cgroup to the pycontain daemon, which contains it as agent
# "job-<id>". The daemon must be running (systemd unit pycontain.service).
set -eu
: "${SLURM_JOB_ID:?SLURM_JOB_ID not set}"
PYCONTAIN=${PYCONTAIN:-pycontain}
CGROOT=${PYCONTAIN_CGROUP_ROOT:-/sys/fs/cgroup}
# cgroup/v2 plugin layout: <root>/system.slice/slurmstepd.scope/job_<id>
JOB_CG="$CGROOT/system.slice/slurmstepd.scope/job_${SLURM_JOB_ID}"
if [ ! -d "$JOB_CG" ]; then
  mkdir -p "$JOB_CG"
fi
exec "$PYCONTAIN" adopt --cgroup "$JOB_CG" --name "job-${SLURM_JOB_ID}"
