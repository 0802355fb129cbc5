"""Talking to Discord's gateway: getting connected (and which intents Discord allows), the
connection everything outside a command goes through, and answering interactions."""
