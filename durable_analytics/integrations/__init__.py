"""Framework integrations: ``.django``, ``.flask``, ``.asgi`` (FastAPI, Starlette), ``.celery``.

Each is imported only by whoever uses it, and only it imports its framework (install the
matching extra, e.g. ``pip install 'durable-analytics[django]'``). Every web integration binds
a :class:`~durable_analytics.request_context.RequestContext` for the request, which the client
merges into each call made while serving it. Setup for each: docs/integrations.md.
"""
