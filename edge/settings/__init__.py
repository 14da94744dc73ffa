"""The settings of ``cezsar run``: one pydantic model (:class:`RuntimeSettings`, the site file grown),
the flags as overrides of it, the site file's reader, and the reference tables generated from it.

    settings = load_settings("site.yaml", {"hop": 3, "mqtt": "broker:1883"})   # flags over the file
    settings = settings_from(deploy="deploy/synth", source=["cam=0"], actions="a.yaml")  # flags only
"""

from edge.settings.model import (
    HistorySettings,
    HttpSettings,
    MediaSettings,
    MqttSettings,
    MqttTls,
    Outputs,
    RunSettings,
    RuntimeSettings,
    SamplingSettings,
    SourceSettings,
    WebhookSettings,
    ZmqSettings,
    ZoneSettings,
)
from edge.settings.options import OPTIONS, Option, load_settings, parse_host_port
from edge.settings.options import settings as settings_from
from edge.settings.sitefile import SiteConfigError, check_site_config, load_site_config, parse_site_config

__all__ = [
    "OPTIONS",
    "HistorySettings",
    "HttpSettings",
    "MediaSettings",
    "MqttSettings",
    "MqttTls",
    "Option",
    "Outputs",
    "RunSettings",
    "RuntimeSettings",
    "SamplingSettings",
    "SiteConfigError",
    "SourceSettings",
    "WebhookSettings",
    "ZmqSettings",
    "ZoneSettings",
    "check_site_config",
    "load_settings",
    "load_site_config",
    "parse_host_port",
    "parse_site_config",
    "settings_from",
]
