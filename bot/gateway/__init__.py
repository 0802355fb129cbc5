"""The bot on Discord's gateway: the ``commands.Bot`` subclass and getting it connected."""
