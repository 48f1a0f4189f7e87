"""tierd: a self-hosted daemon for webhooks, notifications, reconciliation and reports."""

__version__ = "0.1.0"
