"""Shared pieces of the tests (no tests here), one module per kind of thing:

- ``models``: the test deploy folder (exported once, cached by weights hash), model folders;
- ``video``: rendered and index-coded videos, fake and MJPEG cameras;
- ``net``: free ports, waiting for a condition;
- ``mqtt``: a real mosquitto broker on a loopback port, a paho subscriber, mosquitto_sub;
- ``collect``: a background ZeroMQ subscriber that keeps every message;
- ``procs``: ``cezsar run`` as a subprocess with its log in a file, actions files;
- ``http``: an HTTP server with the runtime's routers.

Fixtures built on them are in tests/conftest.py.
"""
