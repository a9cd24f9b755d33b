"""facegate.registry: arrives with its issue (see README, 'Roadmap')."""
