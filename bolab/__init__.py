"""bolab: the command line (`bolab ...`), the Python client of the lab service
(`bolab.client`, HTTP only), and the local stack launcher (`bolab.stack`: Redis, the API and a
worker as processes).

May import: everything (`bo_engine`, `jobmodel`, `service`, `worker`: the commands that serve
or run them import them when run). `bolab.client` imports httpx alone: a script that only talks
to a lab loads no torch and no Redis client.
"""
