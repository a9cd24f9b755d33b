"""facegate.tune: arrives with its issue (see README, 'Roadmap')."""
