"""The triage service's domain: the offline request classifier.

Plain typed Python: no grpc, no openai. `classifier.classify` reads the structure of a
student's request (traceback, code, quoted error lines) before its wording, and returns
an intent with a confidence, a one-sentence reason, the curriculum topic and the
runner-up intents. The servicer calls it directly, and falls back to it whenever the
LLM is unavailable.
"""
