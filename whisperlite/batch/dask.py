"""The batch on a Dask distributed cluster: `whisperlite batch --scheduler tcp://HOST:8786`.

Tasks are `jobs.run_job` calls; each worker process keeps the model it loaded on its first
task in `jobs._MODELS`, so a model loads once per worker, not once per input. Segments come
back to this client, which writes every output and the manifest, so workers need the inputs
at the same paths (a shared filesystem) but never write anywhere.
"""
from __future__ import annotations

import uuid
from typing import Iterator, Sequence

from whisperlite.batch.jobs import Job, JobResult, ProgressFn, WorkerConfig, run_job
from whisperlite.core.errors import WhisperliteError

CONNECT_TIMEOUT = "15s"


def run_on_dask(address: str, jobs: Sequence[Job], config: WorkerConfig,
                on_progress: ProgressFn | None = None) -> Iterator[JobResult]:
    """Results in completion order; a task lost with its worker is recorded as that job's failure.

    Progress is per finished job here: partial progress would need a channel back from the
    workers, which a per-input bar does not need to be useful.
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise WhisperliteError("--scheduler needs the Dask extra: pip install 'whisperlite[dask]'") from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as e:
        raise WhisperliteError(f"cannot reach the Dask scheduler at {address} ({e})") from None
    try:
        run = uuid.uuid4().hex[:8]
        by_key = {}
        futures = []
        for rank, job in enumerate(jobs):
            # jobs arrive longest first; Dask runs higher priority first
            fut = client.submit(run_job, job, config, key=f"whisperlite-{run}-{job.index}-{job.part}",
                                pure=False, priority=len(jobs) - rank)
            by_key[fut.key] = job
            futures.append(fut)
        for fut in as_completed(futures):
            job = by_key[fut.key]
            try:
                result = fut.result()
            except Exception as e:  # the worker died (KilledWorker) or could not run the task
                result = JobResult(job, [], None, 0.0, f"{job.path}: Dask task failed: {type(e).__name__}: {e}")
            fut.release()  # the segments live on in `result`; the cluster can drop them
            yield result
    finally:
        client.close()
