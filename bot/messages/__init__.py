"""Discord message text: the limits Discord enforces, escaping, and the message value itself."""
