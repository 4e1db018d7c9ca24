"""The job model: settings, the Redis key layout, the job record and its states, the store, the
event stream, the Redis-backed counters, JSON logs, leases, the outboxes (webhooks, MLflow
exports), and sending tasks to the queue. The only code that knows the Redis key layout.

May import: `bo_engine` (its torch-free parts), redis, celery/kombu (to send). Never `worker`
or `service`, which both import it.
"""
