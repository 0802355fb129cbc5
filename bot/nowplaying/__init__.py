"""Now playing: what a member plays (Spotify or their Discord status) and its message."""
