"""Serving: Serve apps, continuous-batching engine, model runner and expert-sharded replicas."""
