#!/bin/bash

# Parameters
#SBATCH --account=lab
#SBATCH --array=0-29%6
#SBATCH --constraint=a100
#SBATCH --cpus-per-task=8
#SBATCH --error=<JOBS>/%A_%a_0_log.err
#SBATCH --exclusive
#SBATCH --gpus-per-node=1
#SBATCH --job-name=tiny-grid
#SBATCH --mem=32GB
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=<JOBS>/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --qos=high
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --time=720
#SBATCH --wckey=submitit

# setup
export OMP_NUM_THREADS=8

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <JOBS>/%A_%a_%t_log.out --error <JOBS>/%A_%a_%t_log.err <PYTHON> -u -m submitit.core._submit <JOBS>
