#!/bin/bash

# Parameters
#SBATCH --cpus-per-task=1
#SBATCH --error=<JOBS>/%j_0_log.err
#SBATCH --job-name=cellblock
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=<JOBS>/%j_0_log.out
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --time=60
#SBATCH --wckey=submitit

# setup
export OMP_NUM_THREADS=1

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <JOBS>/%j_%t_log.out --error <JOBS>/%j_%t_log.err <PYTHON> -u -m submitit.core._submit <JOBS>
