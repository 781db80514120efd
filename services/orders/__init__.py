"""orders: PlaceOrder saga over catalog, pricing, inventory and payments; orders in SQLite."""
