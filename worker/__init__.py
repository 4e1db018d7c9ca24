"""The workers: the Celery app and its tasks, the heartbeat, the lease refresher, the reaper and
the broker inspection it needs (`worker.broker`, the only Redis commands here outside
`jobmodel`). They pull a batch, run the engine and report through the job model.

May import: `bo_engine`, `jobmodel`, celery. Never `service`.
"""
