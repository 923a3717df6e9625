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

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <JOBS>/%A_%a_%t_log.out --error <JOBS>/%A_%a_%t_log.err apptainer exec --nv -B <TMP>/data,<TMP>/runs <TMP>/cell.sif python -u -m submitit.core._submit <JOBS>
