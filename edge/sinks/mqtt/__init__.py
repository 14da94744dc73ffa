"""MQTT sink (paho-mqtt): the runtime's messages on an MQTT broker, with Home Assistant discovery,
per-camera availability, event snapshots and commands.

It takes the messages exactly as the runtime publishes them on ZeroMQ (``publish(topic, payload)``
with topic ``event.<stream>``, ``scores.<stream>``, ``media.<stream>`` or ``status``; see
edge/messages.py) and maps them to topics under ``prefix`` (``P``, default ``cezsar``):

==========================================  ==============================================  =========
topic                                       payload                                         retained
==========================================  ==============================================  =========
``P/availability``                          ``online`` / ``offline`` (last will)            yes
``P/status``                                every status message                            yes
``P/events``                                every event message (the ZeroMQ JSON)           no
``P/<stream>/availability``                 ``online`` while the camera is live, else       yes
                                            ``offline``
``P/<stream>/health``                       the camera's health (edge/health.py), on change yes
``P/<stream>/enabled`` (``/set``)           ``ON``/``OFF``: its frames are recognised       yes
``P/<stream>/scores``                       every scores message of the full frame          no
``P/<stream>/scores/<zone>``                every scores message of one zone                no
``P/<stream>/media``                        every media message                             no
``P/<stream>/<key>``                        ``ON`` from ``start`` until ``end``, then       yes
                                            ``OFF``
``P/<stream>/<key>/attributes``             the action's last event message                 yes
``P/<stream>/<key>/score``                  its smoothed score, at most every               no
                                            ``score_interval`` s
``P/<stream>/<key>/snapshot``               the JPEG of its last event (bounded size)       yes
``P/actions/<key>/enabled`` (``/set``)      ``ON``/``OFF``: the action is scored            yes
==========================================  ==============================================  =========

``<key>`` is the action name as one topic level (edge/sinks/mqtt/naming.py: ``moving left`` ->
``moving_left``, unique within the set). The JSON bodies are byte for byte those of the ZeroMQ
messages (the same builder, :func:`edge.messages.encode`).

Parts: naming.py (topics and ids, and why none collide), discovery.py (Home Assistant entities),
commands.py (the ``/set`` topics), evidence.py (snapshots), state.py (the retained state, clean-up),
sink.py (transport and worker).

Clean-up: at every connection the sink reads the retained messages under ``P/#`` and under this
node's discovery configs; once the runtime has said which streams and actions exist, every retained
topic of ours that belongs to none of them (an earlier run's stream or action, a renamed key) is
emptied, which is how Home Assistant's discovery removes an entity. The same happens live when a
stream or an action goes away.
"""

from edge.sinks.mqtt.naming import slug
from edge.sinks.mqtt.sink import MqttSink

__all__ = ["MqttSink", "slug"]
