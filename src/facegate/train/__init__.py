"""facegate.train: arrives with its issue (see README, 'Roadmap')."""
