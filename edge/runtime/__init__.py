"""The edge runtime, as a package of small parts (docs/architecture.md, "The path of one frame"):

=====================  ===================================================================
``loop.py``            :class:`Runtime`: the ExitStack and the main loop
``outputs.py``         ``build_outputs``: the sinks, media, annotated video, frame taps
``server.py``          ``build_server``: the HTTP server, its routers, the metrics feed
``streams.py``         :class:`StreamManager`: reader threads, live add/remove of sources
``status.py``          :class:`StatusReporter`: summary, status, stats line, readiness
``zoneplan.py``        :class:`ZonePlanner`: which zone crops the actions need
``models.py``          the backend (with fallback), the text tower, the Recognizer
``host.py``            :class:`RuntimeHost`: what routes, console and control socket may use
=====================  ===================================================================

    from edge.runtime import Runtime
    from edge.settings import load_settings
    Runtime(load_settings("site.yaml", {"hop": 3})).run()
"""

from edge.runtime.loop import Runtime

__all__ = ["Runtime"]
