"""End-user authentication: development tokens and their verification (`mesh/auth/tokens.py`)."""
