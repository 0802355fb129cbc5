"""Listening: the listening log and what is built on it or on Spotify's history of a member
(/listening, /recent, /top, /chart, /recap) with their pure renderers."""
