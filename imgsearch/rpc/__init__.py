"""gRPC plumbing shared by both services: server, security interceptors, client, health check."""
