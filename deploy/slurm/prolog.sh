#!/bin/sh
# Slurm Prolog (runs as root on the compute node before the job starts):
# hand the job's cgroup to the pycontain daemon, which contains it as agent
# "job-<id>". The daemon must be running (systemd unit pycontain.service).
#
# Fails closed: if the daemon cannot take the job (not running, refused),
# this exits non-zero, and Slurm drains the node ("Prolog error") and
# requeues the job, so no job runs uncontained. PYCONTAIN_FAIL_OPEN=1 (set it
# in the environment slurmd runs the prolog with, or here) logs the failure and lets the job
# start; the daemon's selector scan still contains it once the daemon is back.
# See docs/deploy.md, "What a failing prolog does".
set -eu
: "${SLURM_JOB_ID:?SLURM_JOB_ID not set}"
PYCONTAIN=${PYCONTAIN:-pycontain}
CGROOT=${PYCONTAIN_CGROUP_ROOT:-/sys/fs/cgroup}
# cgroup/v2 plugin layout: <root>/system.slice/slurmstepd.scope/job_<id>
JOB_CG="$CGROOT/system.slice/slurmstepd.scope/job_${SLURM_JOB_ID}"
if [ ! -d "$JOB_CG" ]; then
  mkdir -p "$JOB_CG"
fi
if "$PYCONTAIN" adopt --cgroup "$JOB_CG" --name "job-${SLURM_JOB_ID}"; then
  exit 0
fi
if [ "${PYCONTAIN_FAIL_OPEN:-0}" = 1 ]; then
  logger -t pycontain-prolog "job ${SLURM_JOB_ID}: pycontain adopt failed; starting the job uncontained (PYCONTAIN_FAIL_OPEN=1)" || true
  exit 0
fi
echo "pycontain-prolog: job ${SLURM_JOB_ID}: the pycontain daemon did not take the job; failing closed (node will drain)" >&2
exit 1
