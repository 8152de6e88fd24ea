"""Side-by-side benchmarks of aiohttp_wsapp and the WebSocket servers a user would pick instead.

Run everything with ``python -m benchmarks`` (or ``--quick`` for a smoke run); see README.md.
"""
