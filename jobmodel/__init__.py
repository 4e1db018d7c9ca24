"""The job model: settings, the Redis key layout, the job record and its states, the store, the
event stream, the Redis-backed counters, JSON logs, leases, the outboxes (webhooks, MLflow
exports), and the task queue (its names, and the messages that queue tasks: a new job's first
task is queued by the store's create script, in the same step that stores the job). The only
code that knows the Redis key layout.

May import: `bo_engine` (its torch-free parts), redis, celery/kombu (to build and send task
messages). Never `worker` or `service`, which both import it.
"""
