"""The FastAPI app: validation, routes, auth, limits, Prometheus metrics, webhooks, the web page.

May import: `bo_engine` (specs, plans; never the training), `jobmodel`. Never `worker`: jobs
reach the workers through `jobmodel.queue`, and every Redis command goes through `jobmodel`.
"""
