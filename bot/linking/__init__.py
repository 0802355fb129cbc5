"""Linking a member's Spotify account: the /link flow, its words, links finished after a hold."""
