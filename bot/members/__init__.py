"""What the bot keeps about each member across features: their visibility choice, their
Spotify access tokens, and the events every feature hears when a member links, unlinks or
changes visibility."""
