"""Built-in channel types. :data:`BUILTIN` is what the plugin registers."""

from .apprise import AVAILABLE as APPRISE_AVAILABLE
from .apprise import AppriseChannel
from .email import EmailChannel
from .log import LogChannel
from .ntfy import NtfyChannel
from .slack import SlackChannel
from .teams import TeamsChannel
from .webhook import WebhookChannel

BUILTIN = [EmailChannel, SlackChannel, TeamsChannel, NtfyChannel, WebhookChannel, LogChannel]
if APPRISE_AVAILABLE:
    BUILTIN.append(AppriseChannel)

__all__ = [
    "BUILTIN",
    "AppriseChannel",
    "EmailChannel",
    "LogChannel",
    "NtfyChannel",
    "SlackChannel",
    "TeamsChannel",
    "WebhookChannel",
]
