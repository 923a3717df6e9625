#!/bin/bash

# Parameters
#SBATCH --array=0-3%4
#SBATCH --cpus-per-task=1
#SBATCH --error=<JOBS>/%A_%a_0_log.err
#SBATCH --gpus-per-node=1
#SBATCH --job-name=cellblock
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=<JOBS>/%A_%a_0_log.out
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --time=60
#SBATCH --wckey=submitit

# setup
export OMP_NUM_THREADS=1
# --sif: the image has no SLURM client; submitit's `scontrol requeue` there is
# recorded by this stand-in, and the teardown below requeues (cellblock.cluster.requeue)
cellblock_relay=<JOBS>/requeue/"$SLURM_JOB_ID"
mkdir -p "$cellblock_relay" && rm -f "$cellblock_relay/request"
cat > "$cellblock_relay/scontrol" <<'CELLBLOCK_SCONTROL'
#!/bin/sh
# cellblock.cluster.requeue: scontrol inside cell.sif, which has no SLURM client.
# `scontrol requeue JOB` (what submitit runs after a checkpoint) is recorded in
# $CELLBLOCK_REQUEUE_FILE; the job's sbatch script, outside the container, then runs
# the real `scontrol requeue JOB`. Nothing else is relayed.
if [ "$#" -eq 2 ] && [ "$1" = requeue ] && [ -n "${CELLBLOCK_REQUEUE_FILE:-}" ]; then
    case "$2" in
        ""|*[!0-9_]*) ;;
        *) printf '%s\n' "$2" > "$CELLBLOCK_REQUEUE_FILE.tmp" &&
            mv "$CELLBLOCK_REQUEUE_FILE.tmp" "$CELLBLOCK_REQUEUE_FILE" && exit 0 ;;
    esac
fi
echo "scontrol $*: SLURM's client is outside the container; cellblock relays only" \
    "'scontrol requeue JOBID' (see cellblock.cluster.requeue)" >&2
exit 1
CELLBLOCK_SCONTROL
chmod +x "$cellblock_relay/scontrol"
export CELLBLOCK_REQUEUE_FILE="$cellblock_relay/request"
export APPTAINERENV_PREPEND_PATH="$cellblock_relay"
export SINGULARITYENV_PREPEND_PATH="$cellblock_relay"

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <JOBS>/%A_%a_%t_log.out --error <JOBS>/%A_%a_%t_log.err apptainer exec --nv -B <TMP>/data,<TMP>/runs <TMP>/cell.sif python -u -m submitit.core._submit <JOBS>


# teardown
cellblock_status=$?
if [ -s "$CELLBLOCK_REQUEUE_FILE" ]; then
    cellblock_job="$(cat "$CELLBLOCK_REQUEUE_FILE")"
    rm -f "$CELLBLOCK_REQUEUE_FILE"
    echo "requeueing job $cellblock_job (asked for in the container)" >&2
    scontrol requeue "$cellblock_job" || exit 1
fi
exit "$cellblock_status"