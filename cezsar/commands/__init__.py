"""The typer verbs of the ``cezsar`` command, one module per stage.

Each module turns its arguments into one call of a library function (training, converter, calibration,
edge, cezsar.app) and holds no logic of its own. Library imports happen inside the verbs, so
``cezsar --help`` and the edge verbs start without torch. A new verb is a function in the module of its
stage (or a new module listed in ``MODULES``) registered by that module's ``register(app)``.
"""

from __future__ import annotations

import typer

from cezsar.commands import (
    actions,
    calibrate,
    config,
    convert,
    data,
    demo,
    evalstream,
    history,
    messaging,
    run,
    train,
)

MODULES = (data, train, convert, calibrate, run, evalstream, actions, messaging, config, demo, history)


def register_all(app: typer.Typer) -> None:
    for module in MODULES:
        module.register(app)
