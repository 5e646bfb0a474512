"""The fastapi_objects example app: live chat rooms, a live counter and a per-user cart.

Run it with ``python -m example_app`` (SQLite ``./objects.db`` by default; ``HOST``, ``PORT``
and ``OBJECTS_DATABASE_URL`` override), or ``uvicorn example_app.main:app``.
"""
