"""payments: charges and refunds, recorded in a SQLite ledger."""
