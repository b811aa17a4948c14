"""The user service: accounts, passwords and login (issues the access tokens)."""
