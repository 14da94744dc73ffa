"""``cezsar config check site.yaml``: validate a site config file (edge/settings).

Registered by cezsar/cli.py.
"""

from __future__ import annotations

from pathlib import Path

import typer

config_app = typer.Typer(
    help="Site config files (site.yaml: sources, zones, outputs, actions, backend).", no_args_is_help=True
)


@config_app.command("check")
def config_check(
    path: Path = typer.Argument(..., help="Site config file (site.yaml)."),
    files: bool = typer.Option(
        True,
        "--files/--no-files",
        help="Also check the files it names: they exist (actions, deploy, TLS, videos), the actions file is valid.",
    ),
) -> None:
    """Validate a site config file: every problem on one line as FILE:LINE:COLUMN: KEY: PROBLEM."""
    from cezsar.yamlfile import ConfigError
    from edge.actions_check import site_actions_warnings
    from edge.settings import check_site_config

    try:
        cfg = check_site_config(path, files=files)
        warns = site_actions_warnings(cfg) if files else []  # its actions file, against its streams and zones
    except ConfigError as e:
        for problem in e.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from None
    for w in warns:
        typer.echo(f"warning: {w}", err=True)
    out = cfg.outputs
    outputs = [name for name in ("zmq", "mqtt", "http", "media") if getattr(out, name) is not None]
    zones = sum(len(s.zones) for s in cfg.sources)
    typer.echo(
        f"{path}: OK: {len(cfg.sources)} source{'s' if len(cfg.sources) != 1 else ''} "
        f"({', '.join(s.name for s in cfg.sources)}), {zones} zone{'s' if zones != 1 else ''}, "
        f"outputs: {', '.join(outputs)}; actions {cfg.actions}; backend {cfg.backend}, precision {cfg.precision}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
