"""The Envoy gateway: its configuration is rendered by `envoy_config`."""
