"""facegate.export: arrives with its issue (see README, 'Roadmap')."""
