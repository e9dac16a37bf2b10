"""The concepts agent's pure domain: curated content, level choice, topic detection,
question matching, and the rule that every example shown has really run."""
