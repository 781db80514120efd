"""catalog: products with base prices in USD, in SQLite, seeded from seed.json."""
