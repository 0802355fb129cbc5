"""The bot's small web server: the OAuth callback pages, /healthz and /metrics."""
