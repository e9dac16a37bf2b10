"""The shared runtime kit: what every LearnFlow server needs, written once."""
