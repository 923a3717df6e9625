"""Local development services: an S3 store and a SLURM cluster on 127.0.0.1.

For the tests, the demo and development on one machine; not part of the pipeline, which
talks to whatever S3 endpoint and SLURM cluster its environment names. Each service
keeps its state in one folder and starts, stops and reports through the same calls
(``start``, ``status``, ``stop``) and the same command line (``start|stop|status``,
``start`` printing ``export`` lines for ``eval``):

- ``s3``: SeaweedFS ``weed mini`` with a public and a private bucket
  (``python -m cellblock.devservices.s3``, ``scripts/s3_local.sh``);
- ``slurm``: a single-node SLURM cluster with accounting, as root
  (``python -m cellblock.devservices.slurm``, ``scripts/slurm_local.sh``).

Shared by both: ``process`` (launch with a log, liveness, termination, the readiness
poll), ``ports`` (free loopback ports, reused across restarts; listening sockets),
``files`` (the state folder's JSON records, atomic writes) and ``cli`` (the command line).
"""
