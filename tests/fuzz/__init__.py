"""Property-based fuzzing of every RPC against real running services (Hypothesis)."""
