"""Clients of the external services the product talks to besides PostgreSQL: the
Kafka client configuration and the Kafka Connect REST API with the connector config."""
