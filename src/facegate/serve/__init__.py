"""facegate.serve: arrives with its issue (see README, 'Roadmap')."""
