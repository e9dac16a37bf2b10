"""The notify domain: alerts, the rules that make them from events, their life cycle."""
