"""The Envoy gateway (DESIGN.md §1, §8): its configuration is rendered by `envoy_config`."""
