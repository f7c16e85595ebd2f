"""pnyx.services: protocols packaged to run for real (serve, clusters, clients, objects)."""
