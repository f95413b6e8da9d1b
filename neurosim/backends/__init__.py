"""Alternative simulators for the same network spec: ``brian2`` runs a config in Brian2 (reference and
alternative backend)."""
