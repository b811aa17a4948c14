"""What every Cinema service shares: settings, server bootstrap, error mapping, auth,
database sessions, peer clients, pagination and logging. Written once, used four times."""
