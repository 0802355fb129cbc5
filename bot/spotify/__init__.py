"""Spotify accounts + Web API client: endpoints build requests, one sender does HTTP."""
