"""Pictures: album art fetched from Spotify's CDN, embed colours picked from it, chart PNGs."""
